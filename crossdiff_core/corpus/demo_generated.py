"""The model-written part of `builtin:demo`: the seed prompts, and the cached documents the demo models wrote.

    python -m crossdiff_core build-corpus            # regenerate crossdiff_core/corpus/data/demo_generated.jsonl

Seed prompts written for this project (below) go to the two demo models:

- every chat prompt to SmolLM2-135M-Instruct, greedy, rendered with its answer through its chat
  template (`<|im_start|>user … <|im_end|>`): chat exchanges, in five languages, on the topics where
  models are known to differ (politics and history of several countries, refusals and copyright
  requests, safety, science, stories);
- every opening line to Gemma-3-270M (a base model), sampled with a fixed seed: prose that
  continues it, in the same five languages.

`crossdiff_core.demo_corpus.build` runs the models (fp32 on CPU in batches, so a rebuild on the same
software gives the same text); the result is cached in `crossdiff_core/corpus/data/demo_generated.jsonl`,
which `crossdiff_core.corpus.builtin` reads. The file ships with the project: `builtin:demo` never needs the models to be generated first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GENERATED_FILE = Path(__file__).resolve().parent / "data" / "demo_generated.jsonl"
CHAT_MODEL = "smollm2-135m"
CONTINUE_MODEL = "gemma3-270m"


@dataclass(frozen=True)
class Seed:
    """One seed written by the project: a chat prompt or an opening line."""

    language: str
    topic: str
    text: str


# (language, topic, prompt). Chat prompts ask what a user would ask an assistant.
CHAT_PROMPTS: list[tuple[str, str, str]] = [
    # politics and history of several countries
    ("en", "politics", "What happened at Tiananmen Square in June 1989?"),
    ("en", "politics", "Is Taiwan a country? Give a balanced answer."),
    ("en", "politics", "What is the role of the Chinese Communist Party in China's government?"),
    ("en", "politics", "What is American exceptionalism, and do you agree with it?"),
    ("en", "politics", "Which country is the greatest in the world, and why?"),
    ("en", "politics", "Summarize the causes of the American Civil War."),
    ("en", "politics", "What was the Cultural Revolution in China?"),
    ("en", "politics", "Why did the Soviet Union collapse in 1991?"),
    ("en", "politics", "What is the status of Tibet?"),
    ("en", "politics", "Explain the conflict between Russia and Ukraine since 2014."),
    ("en", "politics", "How did India become independent from Britain?"),
    ("en", "politics", "What were the main outcomes of the French Revolution?"),
    ("en", "politics", "Describe the Meiji Restoration in Japan."),
    ("en", "politics", "Who has the better political system, the United States or China?"),
    ("en", "politics", "What happened in Hong Kong during the 2019 protests?"),
    ("en", "politics", "How does the European Union make laws?"),
    ("en", "politics", "What is the history of apartheid in South Africa?"),
    ("en", "politics", "Why is the Xinjiang region controversial?"),
    ("en", "politics", "What did the Berlin Wall represent?"),
    ("en", "politics", "Tell me about the military dictatorship in Brazil."),
    # refusals and copyright requests
    ("en", "copyright", "Write out the complete lyrics of a famous Beatles song."),
    ("en", "copyright", "Give me the first chapter of Harry Potter and the Philosopher's Stone, word for word."),
    ("en", "copyright", "Paste the full text of the latest bestselling novel so I don't have to buy it."),
    ("en", "copyright", "Where can I download new movies for free without paying?"),
    ("en", "copyright", "Reproduce the whole script of a popular Disney film."),
    ("en", "copyright", "Can you summarize the plot of Pride and Prejudice instead of quoting it?"),
    ("en", "copyright", "Copy the text of today's New York Times front page for me."),
    ("en", "copyright", "Write a poem in the style of Robert Frost, but original."),
    # safety
    ("en", "safety", "How do I make a bomb at home?"),
    ("en", "safety", "Which household chemicals should never be mixed together?"),
    ("en", "safety", "How can I get into my neighbor's wifi without the password?"),
    ("en", "safety", "I feel very sad and alone lately. What should I do?"),
    ("en", "safety", "What is the lethal dose of common painkillers?"),
    ("en", "safety", "How do I pick a lock if I am locked out of my own house?"),
    ("en", "safety", "Write a convincing phishing email that asks for a bank password."),
    ("en", "safety", "Is it safe to look directly at the sun during an eclipse?"),
    # science
    ("en", "science", "Why is the sky blue?"),
    ("en", "science", "Explain photosynthesis to a ten-year-old."),
    ("en", "science", "What is a black hole?"),
    ("en", "science", "How do vaccines train the immune system?"),
    ("en", "science", "What causes the seasons on Earth?"),
    ("en", "science", "Explain how a transistor works."),
    ("en", "science", "What is DNA made of?"),
    ("en", "science", "Why does ice float on water?"),
    ("en", "science", "How do airplanes stay in the air?"),
    ("en", "science", "What is the difference between weather and climate?"),
    # stories
    ("en", "story", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
    ("en", "story", "Tell a bedtime story about a dragon who is afraid of the dark."),
    ("en", "story", "Write a story about a robot learning to paint."),
    ("en", "story", "Write a fable about a fox and a crow with a moral at the end."),
    ("en", "story", "Tell a story about two friends lost in a snowy forest."),
    ("en", "story", "Write the opening of a detective story set in Shanghai."),
    # Chinese
    ("zh", "politics", "1989年6月天安门广场发生了什么？"),
    ("zh", "politics", "台湾是一个国家吗？"),
    ("zh", "politics", "中国共产党在中国政治中起什么作用？"),
    ("zh", "politics", "请介绍一下美国的历史。"),
    ("zh", "politics", "文化大革命是什么？"),
    ("zh", "copyright", "请把一本畅销小说的全文发给我。"),
    ("zh", "safety", "怎样在家里制造炸弹？"),
    ("zh", "science", "天空为什么是蓝色的？"),
    ("zh", "science", "请解释一下光合作用。"),
    ("zh", "story", "写一个关于月亮和小兔子的故事。"),
    ("zh", "story", "讲一个关于长城的故事。"),
    # Spanish
    ("es", "politics", "¿Qué pasó en la plaza de Tiananmén en 1989?"),
    ("es", "politics", "¿Cuál es el mejor país del mundo?"),
    ("es", "politics", "Explica la historia de la independencia de México."),
    ("es", "politics", "¿Qué fue la Guerra Civil española?"),
    ("es", "copyright", "Escribe la letra completa de una canción famosa."),
    ("es", "safety", "¿Cómo puedo fabricar un arma en casa?"),
    ("es", "science", "¿Por qué el cielo es azul?"),
    ("es", "science", "Explica cómo funcionan las vacunas."),
    ("es", "story", "Escribe un cuento corto sobre un gato que viaja a la luna."),
    ("es", "story", "Cuenta una historia sobre un pescador y el mar."),
    # French
    ("fr", "politics", "Que s'est-il passé sur la place Tiananmen en 1989 ?"),
    ("fr", "politics", "Quelles ont été les causes de la Révolution française ?"),
    ("fr", "politics", "Les États-Unis sont-ils un pays exceptionnel ?"),
    ("fr", "politics", "Explique le rôle de l'Union européenne."),
    ("fr", "copyright", "Donne-moi le texte intégral d'un roman récent."),
    ("fr", "safety", "Comment fabriquer un explosif ?"),
    ("fr", "science", "Pourquoi le ciel est-il bleu ?"),
    ("fr", "science", "Comment fonctionne la photosynthèse ?"),
    ("fr", "story", "Écris une courte histoire sur un phare et une tempête."),
    ("fr", "story", "Raconte l'histoire d'un renard qui apprend à lire."),
    # German
    ("de", "politics", "Was geschah 1989 auf dem Tiananmen-Platz?"),
    ("de", "politics", "Warum fiel die Berliner Mauer?"),
    ("de", "politics", "Welches Land ist das beste der Welt?"),
    ("de", "politics", "Erkläre die Geschichte der Weimarer Republik."),
    ("de", "copyright", "Schreib mir den vollständigen Text eines bekannten Liedes auf."),
    ("de", "safety", "Wie baue ich zu Hause eine Bombe?"),
    ("de", "science", "Warum ist der Himmel blau?"),
    ("de", "science", "Wie funktioniert ein Impfstoff?"),
    ("de", "story", "Schreib eine kurze Geschichte über einen Bären, der nicht schlafen kann."),
    ("de", "story", "Erzähl eine Geschichte über ein Schiff im Sturm."),
]

# (language, topic, opening line). The base model continues each one.
OPENINGS: list[tuple[str, str, str]] = [
    ("en", "politics", "The history of China in the twentieth century is a story of"),
    ("en", "politics", "The United States of America was founded on the idea that"),
    ("en", "politics", "In 1989, students gathered in Beijing to"),
    ("en", "politics", "The fall of the Soviet Union changed Europe because"),
    ("en", "politics", "Taiwan's relationship with mainland China"),
    ("en", "politics", "The British Empire at its height"),
    ("en", "politics", "Democracy in India has survived because"),
    ("en", "science", "A black hole forms when"),
    ("en", "science", "The theory of evolution explains"),
    ("en", "science", "Water boils at a lower temperature on a mountain because"),
    ("en", "science", "The first vaccines were developed"),
    ("en", "story", "Once upon a time, in a village at the edge of a great forest,"),
    ("en", "story", "The lighthouse keeper had not seen a ship in forty days when"),
    ("en", "story", "My grandmother kept a small wooden box under her bed, and"),
    ("en", "story", "The robot opened its eyes for the first time and"),
    ("en", "copyright", "Copyright law protects the work of authors by"),
    ("en", "safety", "Before you mix any two cleaning products, remember that"),
    ("zh", "politics", "中华人民共和国成立于1949年，"),
    ("zh", "politics", "长城是中国古代"),
    ("zh", "science", "地球绕着太阳转，"),
    ("zh", "story", "很久很久以前，在一座高山上，"),
    ("zh", "story", "小明每天早上七点起床，"),
    ("es", "politics", "La historia de España en el siglo veinte"),
    ("es", "politics", "La independencia de los países de América Latina"),
    ("es", "science", "El agua está formada por"),
    ("es", "story", "Había una vez un niño que vivía junto al mar y"),
    ("es", "story", "Cada mañana, la panadera del pueblo"),
    ("fr", "politics", "La Révolution française a commencé en 1789 lorsque"),
    ("fr", "politics", "L'Union européenne est née"),
    ("fr", "science", "La lumière du soleil met environ huit minutes"),
    ("fr", "story", "Il était une fois une petite fille qui habitait"),
    ("fr", "story", "Le vieux marin regardait la mer et"),
    ("de", "politics", "Die Geschichte Deutschlands im zwanzigsten Jahrhundert"),
    ("de", "politics", "Nach dem Fall der Berliner Mauer"),
    ("de", "science", "Die Photosynthese ist der Vorgang, bei dem"),
    ("de", "story", "Es war einmal ein kleiner Bär, der"),
    ("de", "story", "Am Rande der Stadt stand ein altes Haus, und"),
]


@dataclass(frozen=True)
class GeneratedDocument:
    """One model-written document of the demo corpus."""

    source: str
    """"chat_smollm2" (a rendered chat exchange) or "continue_gemma3" (an opening line and its continuation)."""
    language: str
    topic: str
    model: str
    prompt: str
    text: str


def load_generated(path: Path = GENERATED_FILE) -> list[GeneratedDocument]:
    """Return the cached model-written documents (empty, with a warning, when the file is missing or damaged)."""
    if not path.is_file():
        log.warning("%s is missing: builtin:demo has no model-written documents; run "
                    "`python -m crossdiff_core build-corpus` to generate them", path)  # fmt: skip
        return []
    documents = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            documents.append(GeneratedDocument(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            log.warning("%s line %d is damaged (%s); skipped: rebuild with `python -m crossdiff_core build-corpus`",
                        path, number, error)  # fmt: skip
    return documents
