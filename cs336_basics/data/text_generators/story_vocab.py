"""Word lists and sentence templates for the generated story corpus (see :mod:`.stories`).

Kept apart from the generator so the grammar can be read (and extended) without the numpy machinery around it.

- Every list is in *rank order*: the generator draws entry ``r`` (0-based) with probability proportional to
  ``(r + 1) ** -ZIPF_EXPONENT``, so the first entries are the common words and the tail is rare.
- Templates use ``{SLOT}`` markers. Slots named in :data:`BOUND_SLOTS` are fixed once per story (the hero, the
  friend, the special object and its colour, ...) and reused in later sentences: that is the long-range structure a
  model can learn (e.g. recall the object's colour introduced in sentence three when the ending mentions it).
  :data:`DERIVED_SLOTS` repeat a bound choice with its article ("a blue", "an orange"); all other slots (``A_ADJ``
  included) are drawn afresh at every use.
- Names include accented ones and the corpus has an occasional emoji, so byte-level models see multi-byte UTF-8.
"""

from __future__ import annotations

import numpy as np

ZIPF_EXPONENT = 1.1

_HANDMADE_NAMES = [
    "Lily",
    "Tom",
    "Mia",
    "Ben",
    "Sara",
    "Max",
    "Anna",
    "Leo",
    "Emma",
    "Sam",
    "Lucy",
    "Jack",
    "Zoë",
    "José",
    "Chloé",
    "Tim",
    "Ella",
    "Noah",
    "Ruby",
    "Finn",
    "Amélie",
    "Omar",
    "Nina",
    "Björn",
    "Aiko",
    "Renée",
    "Kofi",
    "Ines",
    "Søren",
    "Priya",
    "Mateo",
    "Hana",
    "Ivan",
    "Léa",
    "Raúl",
    "Yara",
    "Felix",
    "Nuño",
    "Grace",
    "Malik",
    "François",
    "Olga",
    "Ravi",
    "Elif",
    "Łukasz",
    "Maya",
    "Kai",
    "Zainab",
    "Hugo",
    "Freya",
]
_SYLLABLES = ["ka", "ri", "mo", "len", "ta", "vi", "sor", "el", "an", "bel", "dor", "mi", "na", "tho", "ru", "fin",
              "ga", "lo", "pe", "zan", "qui", "ber", "sa", "to", "wyn", "ca", "dri", "mel"]  # fmt: skip
_TOWN_ENDINGS = ["ton", "ford", "moor", "dale", "wick", "brook", "haven", "field"]


def _made_up_words(count: int, parts: list[str], endings: list[str] | None, seed: int) -> list[str]:
    """``count`` distinct capitalised pseudo-words from syllables; fixed by ``seed`` (independent of story seeds)."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    seen = set(_HANDMADE_NAMES)
    while len(words) < count:
        n = int(rng.integers(2, 4))
        word = "".join(parts[i] for i in rng.integers(0, len(parts), n))
        if endings is not None:
            word += endings[int(rng.integers(0, len(endings)))]
        word = word.capitalize()
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


NAMES = _HANDMADE_NAMES + _made_up_words(350, _SYLLABLES, None, seed=7)
KINDS = ["girl", "boy", "little girl", "little boy", "child", "fox", "rabbit", "bear", "cat", "dog", "robot",
         "dragon", "mouse", "bird", "frog", "owl", "turtle", "princess", "farmer", "pirate"]  # fmt: skip
PLACES = (
    ["the big forest", "a small village", "the old castle", "a quiet town", "the park", "a house by the sea",
     "the garden", "a busy city", "the green valley", "a farm", "the snowy mountains", "a little island"]
    + ["the town of " + w for w in _made_up_words(120, _SYLLABLES, _TOWN_ENDINGS, seed=11)]
)  # fmt: skip
OBJECTS = ["ball", "kite", "box", "hat", "book", "key", "cup", "drum", "map", "boat", "lamp", "shell", "stone",
           "ring", "bell", "clock", "coat", "spoon", "flute", "blanket", "basket", "compass", "crown", "feather",
           "marble", "teapot", "lantern", "scarf", "puzzle", "umbrella"]  # fmt: skip
COLORS = ["red", "blue", "green", "yellow", "purple", "pink", "orange", "white", "black", "golden", "silver",
          "brown", "gray", "turquoise", "crimson"]  # fmt: skip
AGES = [str(a) for a in (5, 6, 7, 4, 8, 9, 3, 10, 11, 12)]
_NOUN_PAIRS = [
    ("tree", "trees"),
    ("flower", "flowers"),
    ("rock", "rocks"),
    ("river", "rivers"),
    ("door", "doors"),
    ("window", "windows"),
    ("hill", "hills"),
    ("cloud", "clouds"),
    ("table", "tables"),
    ("bridge", "bridges"),
    ("pond", "ponds"),
    ("road", "roads"),
    ("star", "stars"),
    ("apple", "apples"),
    ("leaf", "leaves"),
    ("bench", "benches"),
    ("fence", "fences"),
    ("bush", "bushes"),
    ("wall", "walls"),
    ("cake", "cakes"),
    ("duck", "ducks"),
    ("sheep", "sheep"),
    ("mouse", "mice"),
    ("shop", "shops"),
    ("train", "trains"),
    ("button", "buttons"),
    ("candle", "candles"),
    ("pebble", "pebbles"),
    ("cookie", "cookies"),
    ("ladder", "ladders"),
    ("puddle", "puddles"),
    ("tower", "towers"),
    ("wagon", "wagons"),
    ("nest", "nests"),
    ("berry", "berries"),
    ("carrot", "carrots"),
    ("chair", "chairs"),
    ("cave", "caves"),
    ("gate", "gates"),
    ("mirror", "mirrors"),
    ("pillow", "pillows"),
    ("sandcastle", "sandcastles"),
    ("snail", "snails"),
    ("whistle", "whistles"),
    ("acorn", "acorns"),
    ("beetle", "beetles"),
    ("chimney", "chimneys"),
    ("meadow", "meadows"),
    ("orchard", "orchards"),
    ("volcano", "volcanoes"),
]
NOUNS = [s for s, _ in _NOUN_PAIRS]
PLURAL_NOUNS = [p for _, p in _NOUN_PAIRS]
ADJECTIVES = ["big", "small", "happy", "shiny", "old", "new", "funny", "brave", "kind", "tiny", "soft", "loud",
              "quiet", "strange", "bright", "dark", "warm", "cold", "silly", "gentle", "tall", "round", "fast",
              "slow", "wet", "dusty", "curious", "sleepy", "clever", "fluffy", "sparkly", "wobbly", "grumpy",
              "enormous", "mysterious", "ancient", "peculiar", "magnificent"]  # fmt: skip
VERBS = ["saw", "found", "liked", "took", "made", "painted", "carried", "hid", "opened", "cleaned", "fixed",
         "pushed", "pulled", "dropped", "shared", "watched", "followed", "climbed", "drew", "hugged", "kicked",
         "counted", "measured", "polished", "discovered", "borrowed", "juggled", "untangled"]  # fmt: skip
ADVERBS = ["slowly", "quickly", "happily", "carefully", "quietly", "gently", "proudly", "bravely", "softly",
           "suddenly", "sadly", "eagerly", "patiently", "nervously", "cheerfully", "secretly", "clumsily",
           "gracefully", "curiously", "triumphantly"]  # fmt: skip
FEELINGS = ["happy", "glad", "sad", "tired", "excited", "scared", "proud", "surprised", "calm", "hungry"]
FOODS = ["soup", "bread", "apples", "pancakes", "rice", "cheese", "cookies", "pie", "noodles", "honey",
         "carrot cake", "crème brûlée"]  # fmt: skip
TIMES = ["One day", "Later", "The next day", "After lunch", "That night", "In the morning", "Soon", "At noon",
         "One rainy afternoon", "Before bedtime"]  # fmt: skip
GREETINGS = ["Hello", "Hi", "Good morning", "Hey", "Look", "Wow", "Oh no", "Hooray"]
NUMBERS = [str(n) for n in range(2, 21)] + [str(n) for n in (25, 30, 40, 50, 100, 12, 365, 1000, 2024, 7)]
EMOJIS = ["🙂", "😀", "🌟", "🐶", "🍎", "🎈", "❤️", "🌈"]


def _with_article(words: list[str]) -> list[str]:
    return [("an " if w[0] in "aeiou" else "a ") + w for w in words]


WORDS: dict[str, list[str]] = {
    "HERO": NAMES, "FRIEND": NAMES, "KIND": KINDS, "PLACE": PLACES, "OBJ": OBJECTS, "COLOR": COLORS,
    "AGE": AGES, "NOUN": NOUNS, "NOUNS": PLURAL_NOUNS, "ADJ": ADJECTIVES, "VERB": VERBS, "ADV": ADVERBS,
    "FEEL": FEELINGS, "FOOD": FOODS, "TIME": TIMES, "GREET": GREETINGS, "NUM": NUMBERS, "EMOJI": EMOJIS,
}  # fmt: skip
WORDS |= {"A_ADJ": _with_article(ADJECTIVES), "A_KIND": _with_article(KINDS), "A_COLOR": _with_article(COLORS)}
BOUND_SLOTS = ("HERO", "FRIEND", "KIND", "PLACE", "OBJ", "COLOR", "AGE")
# Slots that repeat a bound slot's choice in another form ("a"/"an" + the word), so articles agree.
DERIVED_SLOTS = {"A_KIND": "KIND", "A_COLOR": "COLOR"}

# Each story: one sentence from each intro group, BODY sentences drawn by weight, then one ending.
# (template, weight) pairs; the first intro sentence always names the hero as "named X." or "called X.".
INTRO_GROUPS: list[list[tuple[str, float]]] = [
    [
        ("Once upon a time, there was {A_ADJ} {KIND} named {HERO}.", 3.0),
        ("There once was {A_KIND} called {HERO}.", 1.0),
        ("Long ago, in {PLACE}, lived {A_ADJ} {KIND} named {HERO}.", 1.0),
    ],
    [
        ("{HERO} was {AGE} years old and had a friend named {FRIEND}.", 1.0),
        ("{HERO}'s best friend was {FRIEND}, who lived in {PLACE}.", 1.0),
        ("Every day, {HERO} played with a friend named {FRIEND}.", 1.0),
    ],
    [
        ("One day, {HERO} found {A_COLOR} {OBJ}.", 1.0),
        ("{HERO} had {A_COLOR} {OBJ} that was very special.", 1.0),
        ("For {HERO}'s birthday, {FRIEND} gave {HERO} {A_COLOR} {OBJ}.", 1.0),
    ],
]
BODY: list[tuple[str, float]] = [
    ("{TIME}, {HERO} went to the {NOUN} with {FRIEND}.", 3.0),
    ("{HERO} {VERB} {A_ADJ} {NOUN} near the {NOUN}.", 3.0),
    ('"{GREET}, {FRIEND}!" said {HERO}.', 2.0),
    ('"Have you seen my {COLOR} {OBJ}?" asked {HERO}.', 1.5),
    ('"No, but I saw {NUM} {NOUNS} by the {NOUN}," said {FRIEND}.', 1.5),
    ("{HERO} held the {COLOR} {OBJ} {ADV}.", 2.0),
    ("The {OBJ} was {COLOR} and very {ADJ}.", 1.5),
    ("{FRIEND} felt {FEEL} and {VERB} the {NOUN}.", 2.0),
    ("They walked {NUM} steps across {PLACE}.", 1.0),
    ("{HERO} was {AGE} years old, and {FRIEND} was a little older.", 1.0),
    ('"I am {AGE} now!" said {HERO}.', 0.7),
    ("{HERO} and {FRIEND} ate {FOOD} together.", 1.5),
    ("Everyone in {PLACE} knew about the {COLOR} {OBJ}.", 1.0),
    ("{HERO} smiled {EMOJI}", 0.3),
    ('"Look, {A_ADJ} {NOUN}! {EMOJI}" shouted {FRIEND}.', 0.3),
    ("The {KIND} looked at the {NOUN} {ADV}.", 1.5),
    ("{HERO} counted {NUM} {NOUNS}: one, two, three, and more.", 0.8),
    ("It was {ADJ} outside, but {HERO} was not afraid.", 1.0),
    ('{FRIEND} asked, "Why is the {OBJ} so {ADJ}?"', 1.0),
    ('"Because it came from {PLACE}," said {HERO}.', 1.0),
    ("{HERO} put the {OBJ} next to the {NOUN}.", 1.5),
    ("Then {FRIEND} {VERB} the {NOUN} {ADV}.", 2.0),
    ("The {NOUN} was {ADJ}; the {NOUN} was {ADJ}.", 1.0),
    ("At {NUM} o'clock, {HERO} and {FRIEND} went home.", 0.8),
    ("Oh no, {HERO} lost the {OBJ}! {FRIEND} helped to look for it.", 1.0),
    ("They found the {COLOR} {OBJ} under {A_ADJ} {NOUN}.", 1.0),
    ('{HERO} said, "I love {FOOD} and {NOUNS}."', 1.0),
    ("The {NOUNS} and the {NOUNS} were {ADJ} today.", 1.0),
]
ENDINGS: list[tuple[str, float]] = [
    ("In the end, {HERO} and {FRIEND} were {FEEL}, and the {COLOR} {OBJ} was safe.", 1.0),
    ("From that day on, {HERO} kept the {COLOR} {OBJ} in {PLACE}.", 1.0),
    ("{HERO} hugged {FRIEND}. The end.", 1.0),
    ("And that is the story of {HERO}, {FRIEND} and the {COLOR} {OBJ}.", 1.0),
]
