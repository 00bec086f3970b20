"""Small built-in text corpus used to train the tokenizers of the tiny demo models.

The sentences are short and varied (movie reviews, facts, questions, everyday speech) and part
of them comes with German translations for the Marian (English to German) target side. Most of
the corpus is expanded from templates so this file stays short; the expansion is deterministic.
"""

from __future__ import annotations

import itertools

_POSITIVE_WORDS = (
    "wonderful", "brilliant", "moving", "delightful", "funny", "beautiful", "gripping", "charming",
)
_NEGATIVE_WORDS = (
    "boring", "terrible", "predictable", "dull", "painful", "confusing", "awful", "lifeless",
)
_REVIEW_TEMPLATES = (
    "This movie was {adj}.",
    "The acting was {adj} and the story kept going.",
    "What a {adj} film, I would watch it again.",
    "Honestly, the plot felt {adj} from start to finish.",
    "The soundtrack was {adj}, but the ending surprised me.",
    "I found the second half {adj}.",
)
_EXTRA_REVIEWS = (
    ("I loved every minute of it!", 1),
    ("A masterpiece with a great cast.", 1),
    ("Not bad at all, my kids enjoyed it too.", 1),
    ("A warm, clever and surprisingly deep comedy.", 1),
    ("I want those two hours of my life back.", 0),
    ("The worst film I have seen this year.", 0),
    ("It was fine, nothing special.", 0),
    ("The special effects look cheap and the jokes fall flat.", 0),
)

_FACTS = (
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Water boils at one hundred degrees Celsius.",
    "The Earth orbits the Sun once a year.",
    "The Moon has no air and no weather.",
    "Mount Everest is the highest mountain on Earth.",
    "The Amazon is a very long river in South America.",
    "Light travels faster than sound.",
    "Bees make honey from the nectar of flowers.",
    "The heart pumps blood through the body.",
    "Albert Einstein developed the theory of relativity.",
    "Marie Curie won two Nobel Prizes.",
    "The Pacific is the largest ocean in the world.",
    "A week has seven days and a year has twelve months.",
    "Computers store information as bits.",
    "Plants turn sunlight into energy.",
    "The Great Wall of China is thousands of kilometers long.",
    "Penguins live in the southern half of the world.",
    "Shakespeare wrote Hamlet and Macbeth.",
    "The first person walked on the Moon in 1969.",
)

_QUESTIONS = (
    "Where is the train station?",
    "What time does the museum open?",
    "How much does this cost?",
    "Who wrote this book?",
    "When was the Eiffel Tower built?",
    "Why is the sky blue?",
    "What is the capital of Italy?",
    "How many people live in Tokyo?",
    "Can you recommend a good restaurant?",
    "Is it going to rain tomorrow?",
    "Which film won the award last year?",
    "How do I get to the airport?",
    "What is your favourite colour?",
    "Do you speak English?",
    "How old is the universe?",
)

# (English, German) pairs written by hand; the rest is expanded from the tables below.
_PAIRS = (
    ("Good morning!", "Guten Morgen!"),
    ("Thank you very much.", "Vielen Dank."),
    ("How are you today?", "Wie geht es dir heute?"),
    ("I am fine, thanks.", "Mir geht es gut, danke."),
    ("My name is Anna.", "Ich heiße Anna."),
    ("I live in a small town.", "Ich wohne in einer kleinen Stadt."),
    ("Where is the train station?", "Wo ist der Bahnhof?"),
    ("What time is it?", "Wie spät ist es?"),
    ("I would like a cup of coffee.", "Ich möchte eine Tasse Kaffee."),
    ("Could you help me, please?", "Könnten Sie mir bitte helfen?"),
    ("The weather is nice today.", "Das Wetter ist heute schön."),
    ("It is raining again.", "Es regnet schon wieder."),
    ("We are going to the cinema tonight.", "Wir gehen heute Abend ins Kino."),
    ("I do not understand.", "Ich verstehe das nicht."),
    ("Please speak more slowly.", "Bitte sprechen Sie langsamer."),
    ("The book is on the table.", "Das Buch liegt auf dem Tisch."),
    ("I love this city.", "Ich liebe diese Stadt."),
    ("See you tomorrow.", "Bis morgen."),
    ("The children are playing outside.", "Die Kinder spielen draußen."),
    ("How much does the ticket cost?", "Wie viel kostet die Fahrkarte?"),
    ("This movie was wonderful.", "Dieser Film war wunderbar."),
    ("This movie was boring.", "Dieser Film war langweilig."),
    ("Paris is the capital of France.", "Paris ist die Hauptstadt von Frankreich."),
    ("Berlin is the capital of Germany.", "Berlin ist die Hauptstadt von Deutschland."),
    ("I am learning German.", "Ich lerne Deutsch."),
    ("The train is late.", "Der Zug hat Verspätung."),
    ("My brother works in a hospital.", "Mein Bruder arbeitet in einem Krankenhaus."),
    ("She reads a newspaper every morning.", "Sie liest jeden Morgen eine Zeitung."),
    ("Happy birthday!", "Alles Gute zum Geburtstag!"),
    ("Have a nice weekend.", "Schönes Wochenende."),
)

# Subjects with their German form (article carries the gender) and predicates in both languages.
_SUBJECTS = (
    ("the cat", "die Katze"), ("the dog", "der Hund"), ("the teacher", "der Lehrer"),
    ("the girl", "das Mädchen"), ("my mother", "meine Mutter"), ("the old man", "der alte Mann"),
    ("the doctor", "die Ärztin"), ("the child", "das Kind"), ("my friend", "mein Freund"),
    ("the bird", "der Vogel"), ("the student", "die Studentin"), ("the farmer", "der Bauer"),
)
_PREDICATES = (
    ("is sleeping", "schläft"), ("is hungry", "ist hungrig"), ("is very happy", "ist sehr glücklich"),
    ("likes the garden", "mag den Garten"), ("is reading a book", "liest ein Buch"),
    ("drinks water", "trinkt Wasser"), ("is in the kitchen", "ist in der Küche"),
    ("sees the house", "sieht das Haus"), ("is tired today", "ist heute müde"),
    ("plays in the park", "spielt im Park"), ("eats an apple", "isst einen Apfel"),
    ("is waiting for the bus", "wartet auf den Bus"),
)


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def parallel_pairs() -> list[tuple[str, str]]:
    """Return the (English, German) sentence pairs: hand-written ones, then template ones."""
    generated = [
        (_capitalize(f"{en_subject} {en_predicate}."), _capitalize(f"{de_subject} {de_predicate}."))
        for (en_subject, de_subject), (en_predicate, de_predicate) in itertools.product(
            _SUBJECTS, _PREDICATES
        )
    ]
    return list(_PAIRS) + generated


def movie_reviews() -> list[tuple[str, int]]:
    """Return (review, label) pairs with label 1 for positive and 0 for negative reviews."""
    reviews = [
        (template.format(adj=adjective), label)
        for template in _REVIEW_TEMPLATES
        for label, words in ((1, _POSITIVE_WORDS), (0, _NEGATIVE_WORDS))
        for adjective in words
    ]
    return reviews + list(_EXTRA_REVIEWS)


def english_sentences() -> list[str]:
    """Return every English sentence of the corpus (a few hundred, without duplicates)."""
    sentences = [text for text, _ in movie_reviews()]
    sentences += [*_FACTS, *_QUESTIONS]
    sentences += [english for english, _ in parallel_pairs()]
    return list(dict.fromkeys(sentences))


def german_sentences() -> list[str]:
    """Return the German side of the parallel corpus."""
    return list(dict.fromkeys(german for _, german in parallel_pairs()))
