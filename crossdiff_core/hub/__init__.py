"""The Hugging Face Hub: publish and find crosscoders (`repo`), deploy the app as a Space (`deploy`), and
read crosscoders trained by other libraries (`importers`)."""
