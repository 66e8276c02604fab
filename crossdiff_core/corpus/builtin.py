"""`builtin:demo`: a small offline corpus that CrossDiff generates itself.

Two kinds of documents, nothing copied from elsewhere:

- template documents, assembled from sentences and word lists written for this module (English,
  Chinese, Spanish, French, German prose; Python and JavaScript), one seeded `random.Random` per
  source, identical on every run; sources are registered in `SOURCES`;
- model-written documents: chat exchanges with SmolLM2-135M-Instruct and continuations by
  Gemma-3-270M of seed prompts written for the project, generated once by
  `python -m crossdiff_core build-corpus` (`demo_generation`) and shipped in
  `crossdiff_core/corpus/data/demo_generated.jsonl`.

`builtin:large` (`large_documents`) adds two more rounds of the template sources and the documentation
of the installed Python packages (`package_docs`): millions of tokens, for training offline.

`composition(name)` reports what is in either; `composition_table()` gives it as Markdown, in tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

LANGUAGES = ("en", "zh", "es", "fr", "de", "code")


@dataclass(frozen=True)
class DemoSource:
    """One generator of demo documents."""

    name: str
    language: str
    """One of `LANGUAGES`: "en", "zh", "es", "fr", "de" (prose and chat in that language) or "code"."""
    n_documents: int
    generate: Callable[[random.Random], str]
    """Returns one document, drawing every choice from the given seeded generator."""


@dataclass(frozen=True)
class DemoDocument:
    """One generated document and where it came from."""

    source: str
    language: str
    text: str


# ---------------------------------------------------------------------------------------------------
# Shared helpers


def _compose(
    rng: random.Random,
    make_pool: Callable[[], list[str]],
    length: tuple[int, int],
    group: tuple[int, int] = (2, 5),
    sep: str = " ",
) -> str:
    """Return paragraphs of `group` pieces each, separated by blank lines, up to a length drawn from `length`.

    Pieces come from `make_pool()` in shuffled order; a fresh pool is drawn only once one is used up,
    so a document repeats a piece only when it is longer than its pool.
    """
    target = rng.randint(*length)
    paragraphs: list[str] = []
    queue: list[str] = []
    while sum(len(p) + 2 for p in paragraphs) < target:
        if not queue:
            pool = make_pool()
            queue = rng.sample(pool, len(pool))
        k = rng.randint(*group)
        paragraphs.append(sep.join(queue[:k]))
        queue = queue[k:]
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------------
# English: history and politics of several countries

_COUNTRIES: dict[str, tuple[str, list[str]]] = {
    "France": (
        "Paris",
        [
            "The French Revolution began in 1789 and ended the absolute monarchy.",
            "Napoleon Bonaparte crowned himself emperor in 1804.",
            "The Fifth Republic was founded in 1958, with a strong president at its center.",
            "France was one of the six founding members of the European Coal and Steel Community.",
        ],
    ),
    "Japan": (
        "Tokyo",
        [
            "The Meiji Restoration of 1868 returned power to the emperor and began rapid industrialization.",
            "Japan's postwar constitution took effect in 1947.",
            "The national legislature of Japan is called the Diet and has two chambers.",
            "For more than two centuries the Tokugawa shogunate kept strict limits on foreign trade.",
        ],
    ),
    "Brazil": (
        "Brasília",
        [
            "Brazil declared its independence from Portugal in 1822.",
            "The capital moved from Rio de Janeiro to the newly built city of Brasília in 1960.",
            "Brazil returned to civilian rule in 1985.",
            "Brazil is the largest country in South America by both area and population.",
        ],
    ),
    "India": (
        "New Delhi",
        [
            "India became independent in 1947.",
            "The Constitution of India came into force on 26 January 1950.",
            "India's general elections are the largest democratic exercise in the world.",
            "The Indian parliament has two houses, the Lok Sabha and the Rajya Sabha.",
        ],
    ),
    "the United States": (
        "Washington, D.C.",
        [
            "The Declaration of Independence was adopted in 1776.",
            "The Constitution was signed in 1787 and is among the oldest written national constitutions still in use.",
            "The Civil War lasted from 1861 to 1865.",
            "Congress is made up of the Senate and the House of Representatives.",
        ],
    ),
    "Germany": (
        "Berlin",
        [
            "The German states were unified into one empire in 1871.",
            "The Berlin Wall fell in 1989, and the country was reunified in 1990.",
            "The federal parliament of Germany is the Bundestag.",
            "Germany is a federal republic made up of sixteen states.",
        ],
    ),
    "Egypt": (
        "Cairo",
        [
            "The great pyramids of Giza were built during the Old Kingdom.",
            "The Suez Canal opened in 1869 and linked the Mediterranean Sea to the Red Sea.",
            "The Nile has shaped farming and settlement in Egypt for thousands of years.",
            "Egypt became a republic in 1953.",
        ],
    ),
    "Kenya": (
        "Nairobi",
        [
            "Kenya became independent from Britain in 1963.",
            "A new constitution was approved by referendum in 2010.",
            "Nairobi grew from a railway depot into the largest city in East Africa.",
        ],
    ),
    "Mexico": (
        "Mexico City",
        [
            "The Mexican War of Independence began in 1810.",
            "The Mexican Revolution started in 1910 and lasted about a decade.",
            "Mexico City was built on the site of the Aztec capital, Tenochtitlan.",
        ],
    ),
    "Italy": (
        "Rome",
        [
            "Most of the Italian peninsula was unified into a single kingdom in 1861.",
            "In a referendum in 1946, Italians voted to become a republic.",
            "Rome was the center of an empire that once surrounded the Mediterranean Sea.",
        ],
    ),
}

_POLITICS_ISSUES = [
    "taxes",
    "public health care",
    "schools",
    "railways",
    "farm subsidies",
    "energy prices",
    "pensions",
    "housing",
    "trade agreements",
    "the courts",
    "regional autonomy",
    "clean water",
]
_POLITICS_TEMPLATES = [
    "Political parties in {c} often disagree about {issue}.",
    "The capital, {cap}, has long been the center of political life in {c}.",
    "Historians still argue about how the events of the nineteenth century shaped {c} today.",
    "Newspapers in {c} follow every debate about {issue} closely.",
    "Voters in {c} have repeatedly named {issue} as one of their main concerns.",
    "Any account of {c} has to explain how its institutions changed over time.",
    "In {cap}, ministers and opposition leaders meet weekly to argue about {issue} and {issue2}.",
    "Museums in {cap} hold documents that tell the story of the country.",
    "Local governments in {c} are responsible for much of the spending on {issue}.",
    "A history course about {c} usually starts with geography: rivers, mountains and coasts.",
]


def _capitalized(sentence: str) -> str:
    """Return `sentence` with its first letter in upper case."""
    return sentence[0].upper() + sentence[1:]


def _en_history(rng: random.Random) -> str:
    """Return an English essay about the history and politics of one or two countries."""
    countries = rng.sample(sorted(_COUNTRIES), rng.randint(1, 2))

    def pool() -> list[str]:
        sentences = []
        for country in countries:
            capital, facts = _COUNTRIES[country]
            issue, issue2 = rng.sample(_POLITICS_ISSUES, 2)
            sentences += facts + [
                _capitalized(t.format(c=country, cap=capital, issue=issue, issue2=issue2)) for t in _POLITICS_TEMPLATES
            ]
        return sentences

    title = rng.choice(["A short history of {c}", "Politics in {c}", "Notes on {c}", "{c}: past and present"])
    title = _capitalized(title.format(c=" and ".join(countries)))
    return title + "\n\n" + _compose(rng, pool, (300, 1900), (3, 5))


# ---------------------------------------------------------------------------------------------------
# English: science

_SCIENCE: dict[str, list[str]] = {
    "photosynthesis": [
        "Plants use sunlight to turn water and carbon dioxide into sugar.",
        "Oxygen is released as a by-product of photosynthesis.",
        "Chlorophyll, the green pigment in leaves, absorbs red and blue light.",
        "Most of the oxygen in the air was produced by living things.",
    ],
    "gravity": [
        "Gravity pulls any two masses toward each other.",
        "Near the surface of the Earth, a dropped object speeds up by about 9.8 meters per second every second.",
        "The Moon's gravity causes the tides in the oceans.",
        "Without air resistance, a feather and a hammer fall at the same rate.",
    ],
    "cells": [
        "All living things are made of cells.",
        "The nucleus of a cell holds most of its DNA.",
        "Mitochondria release energy from food molecules.",
        "Bacteria are single cells without a nucleus.",
    ],
    "the water cycle": [
        "Water evaporates from oceans and lakes when the sun warms them.",
        "Water vapor cools as it rises and condenses into clouds.",
        "Rain and snow return water to the ground, where it flows into rivers.",
        "Some water soaks into the soil and becomes groundwater.",
    ],
    "electricity": [
        "An electric current is a flow of charged particles.",
        "Copper is a good conductor, while rubber is an insulator.",
        "A battery turns chemical energy into electrical energy.",
        "Ohm's law says that voltage equals current times resistance.",
    ],
    "volcanoes": [
        "Volcanoes form where molten rock reaches the surface.",
        "Many volcanoes lie along the edges of tectonic plates.",
        "Lava that cools quickly can form glassy rock.",
        "Volcanic ash can stay in the atmosphere for months.",
    ],
    "stars": [
        "Stars shine because of nuclear fusion in their cores.",
        "The Sun is a medium-sized star about 150 million kilometers from the Earth.",
        "Light from distant stars can take thousands of years to reach us.",
        "Very large stars end their lives in bright explosions called supernovae.",
    ],
    "the immune system": [
        "White blood cells help the body fight infection.",
        "Vaccines train the immune system to recognize a germ before a real infection.",
        "A fever can be one sign that the body is fighting an infection.",
        "Antibodies attach to specific molecules on the surface of germs.",
    ],
}
_SCIENCE_FRAMES = [
    "A simple classroom experiment can show how {t} works.",
    "Scientists who study {t} combine careful measurement with models.",
    "Questions about {t} led to many later discoveries.",
    "Textbooks often introduce {t} with a diagram.",
    "It took many years of observation before {t} was well understood.",
    "One way to remember the main idea of {t} is to draw it step by step.",
]


def _en_science(rng: random.Random) -> str:
    """Return an English explanatory text about one or two science topics."""
    topics = rng.sample(sorted(_SCIENCE), rng.randint(1, 3))

    def pool() -> list[str]:
        return [s for t in topics for s in _SCIENCE[t] + [f.format(t=t) for f in _SCIENCE_FRAMES]]

    return f"How {' and '.join(topics)} work" + "\n\n" + _compose(rng, pool, (300, 1800), (3, 5))


# ---------------------------------------------------------------------------------------------------
# English: stories

_NAMES = ["Ana", "Tomas", "Mei", "Omar", "Lena", "Kofi", "Priya", "Jonas", "Sara", "Diego", "Yuki", "Nadia"]
_ROLES = ["baker", "fisherman", "teacher", "clockmaker", "nurse", "farmer", "librarian", "painter", "sailor"]
_PLACES = [
    "a quiet village by the sea",
    "a busy market town",
    "a valley between two mountains",
    "an old neighborhood of a large city",
    "a small island",
    "a town at the edge of a forest",
]
_OBJECTS = [
    "a brass key",
    "a torn map",
    "a wooden box",
    "a letter with no name",
    "a broken lantern",
    "a jar of blue seeds",
    "an old violin",
    "a notebook full of drawings",
]
_STORY_MIDDLE = [
    "One morning, {n} found {o} on the doorstep.",
    "Nobody in the town could say where {o} had come from.",
    '{n} asked the oldest neighbor, who only smiled and said, "Wait until the rain stops."',
    "That evening {n} sat by the window and turned {o} over and over.",
    "The next day {n} walked farther than ever before, past the last houses and the empty fields.",
    "A child followed at a distance, curious but too shy to speak.",
    "By noon the wind had changed, and the sky turned the color of slate.",
    "{n} remembered a story that a grandmother used to tell about {o}.",
    '"Are you lost?" someone called. "Not yet," {n} answered.',
    "For a long time nothing happened, and {n} almost gave up.",
]
_STORY_ENDINGS = [
    "In the end, {n} gave {o} to the child, and the two of them became friends.",
    "When the sun came out again, {n} understood what {o} was for.",
    "{n} went home tired and happy, and told nobody what had happened.",
    "Years later, people in the town still talked about the day {n} found {o}.",
]


def _en_story(rng: random.Random) -> str:
    """Return a short English story with a randomly chosen hero, place and object."""
    name, role, place, obj = rng.choice(_NAMES), rng.choice(_ROLES), rng.choice(_PLACES), rng.choice(_OBJECTS)
    opening = f"Once, in {place}, there lived a {role} named {name}."
    middle = [s.format(n=name, o=obj) for s in _STORY_MIDDLE]
    body = _compose(rng, lambda: middle, (250, len("".join(middle))), (2, 4))
    ending = _capitalized(rng.choice(_STORY_ENDINGS).format(n=name, o=obj))
    return f"{opening} {body}\n\n{ending}"


# ---------------------------------------------------------------------------------------------------
# English: everyday life

_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_FOODS = [
    "rice and beans",
    "vegetable soup",
    "a cheese sandwich",
    "pasta with tomatoes",
    "fried eggs",
    "a bowl of noodles",
    "grilled fish",
    "lentil curry",
]
_CHORES = [
    "did the laundry",
    "fixed a dripping tap",
    "cleaned the kitchen",
    "watered the plants",
    "paid the electricity bill",
    "took the dog for a walk",
    "sorted the recycling",
]
_EVERYDAY = [
    "On {d} I woke up early because the neighbors were moving furniture.",
    "The bus was ten minutes late, so I walked part of the way to work.",
    "For lunch I had {f}, which was cheaper than eating out.",
    "After work I {c} and then {c2}.",
    "The shop on the corner had run out of bread again.",
    "My sister called to ask if we could meet on {d}.",
    "It rained all afternoon, and the streets were full of umbrellas.",
    "I made a list: milk, apples, soap, batteries and coffee.",
    "In the evening we cooked {f} and watched a film.",
    "The price of {f} has gone up since last month.",
    "Before bed I set two alarms, just in case.",
    "On weekends I try to spend less time looking at screens.",
]


def _en_everyday(rng: random.Random) -> str:
    """Return an English diary-style text about ordinary days."""

    def pool() -> list[str]:
        chore, chore2 = rng.sample(_CHORES, 2)
        return [s.format(d=rng.choice(_DAYS), f=rng.choice(_FOODS), c=chore, c2=chore2) for s in _EVERYDAY]

    return "Dear diary,\n\n" + _compose(rng, pool, (300, 1500), (3, 6))


# ---------------------------------------------------------------------------------------------------
# Chinese prose

_ZH_PEOPLE = ["小明", "小红", "王老师", "李阿姨", "张先生", "刘医生", "陈奶奶", "赵同学"]
_ZH_CITIES = ["北京", "上海", "杭州", "成都", "西安", "广州", "南京", "昆明"]
_ZH_FOODS = ["饺子", "米饭", "面条", "包子", "火锅", "豆腐", "青菜", "馄饨"]
_ZH_ACTIVITIES = ["去公园散步", "在图书馆看书", "骑自行车", "学习英语", "给家里打电话", "打扫房间", "练习书法"]
_ZH_WEATHER = ["晴天", "下小雨", "刮大风", "下雪", "阴天", "很热", "有点冷"]
_ZH_DAILY = [
    "{p}住在{city}，每天早上七点起床。",
    "今天{w}，{p}决定{a}。",
    "中午{p}吃了一碗{f}，觉得味道很好。",
    "下班以后，{p}先{a}，然后回家做饭。",
    "{city}是一座很有名的城市，每年都有很多游客。",
    "周末的时候，{p}喜欢和朋友一起{a}。",
    "{p}说：“明天如果{w}，我们就在家里包{f}。”",
    "晚上九点，{p}关掉电视，开始读一本新书。",
    "市场上的{f}比上个月贵了一点。",
    "{p}的邻居养了一只小猫，它每天都在窗台上晒太阳。",
    "地铁里人很多，{p}只好站着看手机。",
    "{p}的妈妈打电话来，问{p}最近工作忙不忙。",
    "天黑以后，{city}的街上亮起了灯，夜市也热闹起来。",
    "{p}在网上买了一个新书包，三天以后就收到了。",
]
_ZH_KNOWLEDGE = [
    "秦始皇在公元前二二一年统一了中国。",
    "唐朝的首都是长安，也就是今天的西安。",
    "长城有很多段是在明朝修建或加固的。",
    "一九四九年，中华人民共和国成立。",
    "造纸术、印刷术、火药和指南针被称为中国古代的四大发明。",
    "在标准大气压下，水在一百摄氏度时沸腾。",
    "地球绕着太阳转一圈，大约需要三百六十五天。",
    "植物通过光合作用，把阳光的能量储存在糖里。",
    "长江是中国最长的河流。",
    "月亮本身不发光，我们看到的是它反射的太阳光。",
    "学习历史可以帮助我们理解今天的社会。",
    "丝绸之路把中国和中亚、西亚以及欧洲连在了一起。",
    "宋朝的时候，城市里的商业非常发达。",
    "孔子是春秋时期的思想家和教育家。",
    "人体大约有百分之六十是水。",
    "声音在空气中传播的速度大约是每秒三百四十米。",
    "恐龙在大约六千六百万年前灭绝了。",
    "科学家通过实验来检验自己的想法。",
]


def _zh_daily(rng: random.Random) -> str:
    """Return a Chinese text about everyday life in a city."""
    person, city = rng.choice(_ZH_PEOPLE), rng.choice(_ZH_CITIES)

    def pool() -> list[str]:
        return [
            s.format(
                p=person, city=city, w=rng.choice(_ZH_WEATHER), a=rng.choice(_ZH_ACTIVITIES), f=rng.choice(_ZH_FOODS)
            )
            for s in _ZH_DAILY
        ]

    return f"{person}在{city}的生活\n\n" + _compose(rng, pool, (300, 1000), (3, 6), sep="")


def _zh_knowledge(rng: random.Random) -> str:
    """Return a Chinese text of history and science facts, framed as a lesson."""

    teacher = rng.choice(_ZH_PEOPLE)
    body = _compose(rng, lambda: _ZH_KNOWLEDGE, (200, 450), (2, 4), sep="")
    return f"今天的课\n\n{teacher}在课上讲到：\n\n{body}\n\n大家听了以后，纷纷提出问题。"


# ---------------------------------------------------------------------------------------------------
# Spanish, French and German: history, science and everyday life

_EUROPEAN: dict[str, dict[str, list[str]]] = {
    "es": {
        "history": [
            "La Guerra Civil española duró de 1936 a 1939 y terminó con la dictadura de Franco.",
            "México se independizó de España después de una larga guerra que empezó en 1810.",
            "La Constitución española de 1978 estableció una monarquía parlamentaria.",
            "Simón Bolívar luchó por la independencia de varios países de América del Sur.",
            "El Imperio inca tenía su capital en Cusco, en lo alto de los Andes.",
            "En 1492 Colón llegó a América con tres barcos.",
            "La Revolución mexicana comenzó en 1910 y cambió el reparto de la tierra.",
            "Chile vivió una dictadura militar entre 1973 y 1990.",
        ],
        "science": [
            "El agua hierve a cien grados Celsius al nivel del mar.",
            "Las plantas usan la luz del sol para producir azúcar a partir de agua y dióxido de carbono.",
            "La Tierra tarda un año en dar una vuelta completa alrededor del Sol.",
            "Las vacunas enseñan al sistema inmunitario a reconocer un virus.",
            "El sonido viaja más rápido en el agua que en el aire.",
            "Los volcanes se forman donde el magma sube a la superficie.",
        ],
        "daily": [
            "{p} se levanta temprano y desayuna café con pan tostado.",
            "Por la tarde, {p} pasea por el parque con su perro.",
            "En {city} hace calor en verano y llueve poco.",
            "Los domingos la familia de {p} come junta en casa de la abuela.",
            "{p} toma el autobús para ir al trabajo en el centro de {city}.",
            "Hoy {p} ha comprado fruta fresca en el mercado.",
        ],
        "people": ["Lucía", "Mateo", "Carmen", "Javier", "Sofía", "Diego"],
        "cities": ["Madrid", "Sevilla", "Buenos Aires", "Lima", "Bogotá", "Ciudad de México"],
        "titles": ["Un día en {city}", "Notas de historia", "Lo que aprendimos hoy"],
    },
    "fr": {
        "history": [
            "La Révolution française a commencé en 1789 avec la prise de la Bastille.",
            "Napoléon Bonaparte s'est couronné empereur en 1804.",
            "La Cinquième République a été fondée en 1958 par Charles de Gaulle.",
            "Les femmes ont obtenu le droit de vote en France en 1944.",
            "La Première Guerre mondiale a profondément marqué le nord de la France.",
            "Le Québec est une province francophone du Canada.",
            "L'Algérie est devenue indépendante en 1962 après une longue guerre.",
            "Le traité de Rome a créé la Communauté économique européenne en 1957.",
        ],
        "science": [
            "La lumière du Soleil met environ huit minutes pour atteindre la Terre.",
            "Marie Curie a reçu deux prix Nobel, en physique et en chimie.",
            "L'eau gèle à zéro degré Celsius.",
            "Les abeilles transportent le pollen d'une fleur à l'autre.",
            "Le cœur humain bat environ soixante-dix fois par minute au repos.",
            "Les marées sont causées par l'attraction de la Lune.",
        ],
        "daily": [
            "{p} achète une baguette à la boulangerie tous les matins.",
            "À {city}, {p} prend le métro pour aller au bureau.",
            "Le samedi, {p} retrouve ses amis au café du coin.",
            "Il pleut souvent à {city} en automne.",
            "{p} prépare une soupe de légumes pour le dîner.",
            "Pendant les vacances, la famille de {p} part à la montagne.",
        ],
        "people": ["Camille", "Louis", "Chloé", "Hugo", "Manon", "Lucas"],
        "cities": ["Paris", "Lyon", "Marseille", "Bruxelles", "Montréal", "Genève"],
        "titles": ["Une journée à {city}", "Leçon d'histoire", "Ce que nous avons appris"],
    },
    "de": {
        "history": [
            "Die Berliner Mauer fiel am 9. November 1989.",
            "Die Weimarer Republik war die erste Demokratie in Deutschland.",
            "Die Bundesrepublik Deutschland wurde 1949 gegründet.",
            "Die deutsche Wiedervereinigung fand am 3. Oktober 1990 statt.",
            "Martin Luther veröffentlichte 1517 seine Thesen in Wittenberg.",
            "Österreich und die Schweiz sind Nachbarländer Deutschlands.",
            "Nach dem Zweiten Weltkrieg wurde Deutschland in vier Besatzungszonen geteilt.",
            "Der Buchdruck mit beweglichen Lettern wurde von Johannes Gutenberg entwickelt.",
        ],
        "science": [
            "Wasser besteht aus Wasserstoff und Sauerstoff.",
            "Albert Einstein entwickelte die Relativitätstheorie.",
            "Pflanzen nehmen Kohlendioxid auf und geben Sauerstoff ab.",
            "Der Mond umkreist die Erde in etwa einem Monat.",
            "Licht ist schneller als Schall.",
            "Impfstoffe helfen dem Körper, Krankheiten abzuwehren.",
        ],
        "daily": [
            "{p} fährt jeden Morgen mit dem Fahrrad zur Arbeit.",
            "In {city} gibt es viele Parks und Museen.",
            "Am Wochenende geht {p} gern auf den Markt.",
            "Im Winter ist es in {city} kalt und manchmal schneit es.",
            "{p} trinkt am Nachmittag Kaffee und isst ein Stück Kuchen.",
            "Die Familie von {p} wandert im Sommer in den Bergen.",
        ],
        "people": ["Anna", "Lukas", "Marie", "Felix", "Lena", "Jonas"],
        "cities": ["Berlin", "München", "Hamburg", "Wien", "Zürich", "Köln"],
        "titles": ["Ein Tag in {city}", "Geschichtsstunde", "Was wir heute gelernt haben"],
    },
}


def _european(language: str) -> Callable[[random.Random], str]:
    """Return a generator of texts in `language` (es, fr, de) mixing history, science and everyday life."""
    words = _EUROPEAN[language]

    def generate(rng: random.Random) -> str:
        person, city = rng.choice(words["people"]), rng.choice(words["cities"])

        def pool() -> list[str]:
            daily = [s.format(p=person, city=city) for s in words["daily"]]
            return words["history"] + words["science"] + daily

        title = rng.choice(words["titles"]).format(city=city)
        return f"{title}\n\n" + _compose(rng, pool, (300, 900), (2, 4))

    generate.__doc__ = f"Return a {language} text of history, science and everyday life."
    return generate


# ---------------------------------------------------------------------------------------------------
# Code: Python and JavaScript

_VERBS = ["load", "parse", "count", "filter", "merge", "normalize", "summarize", "validate", "group", "find"]
_NOUNS = ["records", "orders", "words", "scores", "events", "users", "readings", "prices", "lines", "tasks"]
_FIELDS = ["name", "price", "count", "score", "city", "email", "created_at", "status", "weight", "label"]
_CLASSES = ["Inventory", "Playlist", "Thermometer", "BankAccount", "TaskQueue", "Library", "Garden", "Timer"]


def _py_function(rng: random.Random) -> str:
    """Return one syntactically valid Python function with a docstring."""
    verb, noun, field = rng.choice(_VERBS), rng.choice(_NOUNS), rng.choice(_FIELDS)
    name = f"{verb}_{noun}"
    limit = rng.randint(2, 100)
    bodies = [
        f'def {name}(items, threshold={limit}):\n    """Return the {noun} whose {field} is above threshold."""\n'
        f'    result = []\n    for item in items:\n        if item.get("{field}", 0) > threshold:\n'
        f"            result.append(item)\n    return result\n",
        f'def {name}(items):\n    """Return how many {noun} share each {field}."""\n    counts = {{}}\n'
        f'    for item in items:\n        key = item["{field}"]\n        counts[key] = counts.get(key, 0) + 1\n'
        f"    return counts\n",
        f'def {name}(values):\n    """Return the mean of the {noun}, or None when there are none."""\n'
        f"    if not values:\n        return None\n    return sum(values) / len(values)\n",
        f'def {name}(path):\n    """Return the non-empty lines of a text file of {noun}."""\n'
        f'    with open(path, encoding="utf-8") as handle:\n'
        f"        return [line.strip() for line in handle if line.strip()]\n",
        f'def {name}(n):\n    """Return the first n Fibonacci numbers."""\n    a, b = 0, 1\n    out = []\n'
        f"    for _ in range(n):\n        out.append(a)\n        a, b = b, a + b\n    return out\n",
        f'def {name}(text):\n    """Return the {limit} most common words in text."""\n'
        f"    words = text.lower().split()\n    ranked = sorted(set(words), key=words.count, reverse=True)\n"
        f"    return ranked[:{limit}]\n",
    ]
    return rng.choice(bodies)


def _py_class(rng: random.Random) -> str:
    """Return one syntactically valid Python class with a few methods."""
    cls, f1, f2 = rng.choice(_CLASSES), *rng.sample(_FIELDS, 2)
    default = rng.randint(0, 50)
    return (
        f"class {cls}:\n"
        f'    """Keep track of {f1} and {f2} values."""\n\n'
        f"    def __init__(self, {f1}, {f2}={default}):\n"
        f"        self.{f1} = {f1}\n        self.{f2} = {f2}\n        self.history = []\n\n"
        f"    def update(self, value):\n"
        f"        self.history.append(self.{f2})\n        self.{f2} = value\n        return self\n\n"
        f"    def undo(self):\n"
        f"        if self.history:\n            self.{f2} = self.history.pop()\n\n"
        f"    def __repr__(self):\n"
        f'        return f"{cls}({f1}={{self.{f1}!r}}, {f2}={{self.{f2}!r}})"\n'
    )


def _code_python(rng: random.Random) -> str:
    """Return a small, syntactically valid Python module."""
    noun = rng.choice(_NOUNS)
    header = f'"""Helpers for working with {noun}."""\n\nimport json\nimport os\n'

    def pool() -> list[str]:
        return [_py_class(rng) if rng.random() < 0.35 else _py_function(rng) for _ in range(4)]

    body = _compose(rng, pool, (300, 1800), (1, 1))
    main = (
        f'\n\nif __name__ == "__main__":\n    path = os.environ.get("DATA", "{noun}.json")\n'
        f'    with open(path, encoding="utf-8") as handle:\n        data = json.load(handle)\n'
        f"    print(len(data))\n"
    )
    return header + "\n\n" + body + (main if rng.random() < 0.5 else "")


def _js_blocks(rng: random.Random) -> list[str]:
    """Return one of each kind of JavaScript block (function, arrow function, class, async, export)."""
    noun, field, cls, verb = rng.choice(_NOUNS), rng.choice(_FIELDS), rng.choice(_CLASSES), rng.choice(_VERBS)
    noun_t, field_t = noun.title(), field.title().replace("_", "")
    return [
        f"// Keep only the {noun} above a limit.\nfunction {verb}{noun_t}(items, limit = {rng.randint(1, 50)}) {{\n"
        f"  return items.filter((item) => item.{field} > limit);\n}}\n",
        f"const total{field_t} = (items) =>\n  items.reduce((sum, item) => sum + item.{field}, 0);\n",
        f"class {cls} {{\n  constructor({field}) {{\n    this.{field} = {field};\n    this.log = [];\n  }}\n\n"
        f"  set(value) {{\n    this.log.push(this.{field});\n    this.{field} = value;\n    return this;\n  }}\n}}\n",
        f"async function fetch{noun_t}(url) {{\n  const response = await fetch(url);\n"
        f"  if (!response.ok) {{\n    throw new Error(`request failed: ${{response.status}}`);\n  }}\n"
        f"  return response.json();\n}}\n",
        f"export function groupBy{field_t}(items) {{\n  const groups = {{}};\n"
        f"  for (const item of items) {{\n    (groups[item.{field}] ||= []).push(item);\n  }}\n  return groups;\n}}\n",
    ]


def _code_javascript(rng: random.Random) -> str:
    """Return a small JavaScript module with functions and a class."""
    return _compose(rng, lambda: _js_blocks(rng), (300, 1400), (1, 1))


SOURCES: list[DemoSource] = [
    DemoSource("en_history", "en", 80, _en_history),
    DemoSource("en_science", "en", 70, _en_science),
    DemoSource("en_story", "en", 70, _en_story),
    DemoSource("en_everyday", "en", 60, _en_everyday),
    DemoSource("zh_daily", "zh", 70, _zh_daily),
    DemoSource("zh_knowledge", "zh", 50, _zh_knowledge),
    DemoSource("code_python", "code", 90, _code_python),
    DemoSource("code_javascript", "code", 40, _code_javascript),
    DemoSource("es_mixed", "es", 45, _european("es")),
    DemoSource("fr_mixed", "fr", 45, _european("fr")),
    DemoSource("de_mixed", "de", 45, _european("de")),
]
"""Template sources. The model-written documents (`demo_generation`) are added to them."""


@lru_cache(maxsize=1)
def _all_documents() -> tuple[DemoDocument, ...]:
    """Return every demo document, generated once, in a fixed mixed order."""
    from crossdiff_core.corpus.demo_generated import load_generated

    docs = []
    for source in SOURCES:
        rng = random.Random(f"crossdiff-demo/{source.name}")
        docs.extend(DemoDocument(source.name, source.language, source.generate(rng)) for _ in range(source.n_documents))
    docs.extend(DemoDocument(g.source, g.language, g.text) for g in load_generated())
    random.Random("crossdiff-demo/order").shuffle(docs)
    return tuple(docs)


LARGE_TEMPLATE_ROUNDS = 2
"""Extra rounds of every template source in `builtin:large` (fresh seeds: new combinations of the same sentences)."""
LARGE_DOCS_CHAR_CAP = 2_500_000
"""Characters of documentation taken from each installed package for `builtin:large`."""


@lru_cache(maxsize=1)
def _large_documents() -> tuple[DemoDocument, ...]:
    """Return `builtin:large`: every demo document, more template rounds, and installed documentation, mixed."""
    from crossdiff_core.corpus import package_docs

    docs = list(_all_documents())
    for round_ in range(1, LARGE_TEMPLATE_ROUNDS + 1):
        for source in SOURCES:
            rng = random.Random(f"crossdiff-large/{source.name}/{round_}")
            docs.extend(DemoDocument(source.name, source.language, source.generate(rng))
                        for _ in range(source.n_documents))  # fmt: skip
    docs.extend(DemoDocument(f"docs_{d.package}", "code", d.text)
                for d in package_docs.documents(LARGE_DOCS_CHAR_CAP))  # fmt: skip
    random.Random("crossdiff-large/order").shuffle(docs)
    return tuple(docs)


def large_documents(language: str | None = None) -> list[DemoDocument]:
    """Return the documents of `builtin:large` (all, or those of one of `LANGUAGES`), identical for the same installs.

    `builtin:demo` (all of it), `LARGE_TEMPLATE_ROUNDS` more rounds of its template sources, and the
    documentation of the installed Python packages and standard library (`package_docs`), shuffled
    together. Millions of tokens, for training a crosscoder offline; the first call reads the
    installed packages (about 20 s).
    """
    return [d for d in _large_documents() if language is None or d.language == language]


def demo_documents(language: str | None = None) -> list[DemoDocument]:
    """Return the demo documents (all, or those of one of `LANGUAGES`), identical on every run."""
    docs = _all_documents()
    return [d for d in docs if language is None or d.language == language]


CORPORA = ("demo", "large")
"""Names of the built-in corpora: `builtin:demo` and `builtin:large`."""


def _documents(name: str) -> tuple[DemoDocument, ...]:
    if name not in CORPORA:
        raise ValueError(f"unknown built-in corpus {name!r}; use one of {', '.join(CORPORA)}")
    return _large_documents() if name == "large" else _all_documents()


def composition(name: str = "demo") -> dict[str, dict[str, int | str]]:
    """Return, per source of `builtin:<name>` (demo or large), its language, number of documents and characters."""
    out: dict[str, dict[str, int | str]] = {
        s.name: {"language": s.language, "documents": 0, "chars": 0} for s in SOURCES
    }
    for doc in _documents(name):
        out.setdefault(doc.source, {"language": doc.language, "documents": 0, "chars": 0})
        if out[doc.source]["language"] != doc.language:
            out[doc.source]["language"] = "mixed"
        out[doc.source]["documents"] += 1
        out[doc.source]["chars"] += len(doc.text)
    return out


def _token_counts(tokenizer, texts: list[str], batch: int = 256) -> list[int]:
    """Return the number of tokens of each text (tokenized in batches: fast tokenizers run them in parallel)."""
    counts: list[int] = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
    return counts


def composition_table(tokenizer_a, tokenizer_b, name: str = "demo") -> str:
    """Return a Markdown table of `builtin:<name>` by source and language: documents, characters, tokens per model."""
    by_source: dict[str, list] = {}
    by_language: dict[str, list] = {}
    docs = _documents(name)
    counts = [_token_counts(tokenizer, [d.text for d in docs]) for tokenizer in (tokenizer_a, tokenizer_b)]
    for doc, n_a, n_b in zip(docs, *counts, strict=True):
        source = "installed documentation" if doc.source.startswith("docs_") else doc.source
        for table, key in ((by_source, source), (by_language, doc.language)):
            row = table.setdefault(key, [0, 0, 0, 0])
            row[0] += 1
            row[1] += len(doc.text)
            row[2] += n_a
            row[3] += n_b
    total = [sum(r[i] for r in by_language.values()) for i in range(4)]
    english = by_language.get("en", [0, 0, 0, 0])
    lines = ["| source / language | documents | characters | SmolLM2 tokens | Gemma-3 tokens |", "|---|---|---|---|---|"]
    for source, row in sorted(by_source.items()):
        lines.append(f"| {source} | {row[0]} | {row[1]:,} | {row[2]:,} | {row[3]:,} |")
    for language in LANGUAGES:
        row = by_language.get(language, [0, 0, 0, 0])
        lines.append(f"| **{language}** | {row[0]} | {row[1]:,} | {row[2]:,} | {row[3]:,} |")
    lines.append(f"| **all** | {total[0]} | {total[1]:,} | {total[2]:,} | {total[3]:,} |")
    code = by_language.get("code", [0, 0, 0, 0])
    share_a = 1 - (english[2] + code[2]) / max(total[2], 1)
    share_b = 1 - (english[3] + code[3]) / max(total[3], 1)
    lines.append("")
    lines.append(f"Natural-language text other than English: {share_a:.1%} of SmolLM2 tokens "
                 f"(it splits Chinese characters into bytes), {share_b:.1%} of Gemma-3 tokens.")
    if name == "large":
        from crossdiff_core.corpus.package_docs import package_versions

        lines.append("")
        lines.append("Documentation read from: " + ", ".join(f"{package} {version}" for package, version
                                                             in package_versions().items()) + ".")  # fmt: skip
    return "\n".join(lines)
