"""Generates the bundled multi-task sample: mtl_keras/data/bundled/sample/{train,dev}.tsv.

The data is synthetic (template sentences, not real text). Each row is a short
English-like review of one or two clauses ("the price of the pizza was not
good but the staff were superb") with five labels, one task of each kind:

* topic (multiclass): sports, politics, tech or food, cued by its nouns; some
  nouns belong to two topics (ambiguous texts), some are rare synonyms;
* sentiment (binary): the polarity of the deciding clause: its adjective,
  flipped by a negation ("not good" is negative), and after a contrast ("...
  but ...", "although ..., ...") the second clause decides;
* rating (regression, 1-5 stars): the same cues as sentiment plus intensity
  (5/4 strong/mild positive, 2/1 mild/strong negative; a negated adjective is
  mild: "not superb" 2, "not awful" 4), moved by one star in 10% of rows. It is
  the small task: labelled on 15% of the training rows only;
* aspects (multilabel): which of price, service, quality and speed the text
  talks about (one to three; "value" is price or quality);
* mentions (tagging, IOB2, one tag per word): `item` entities (the topic
  nouns) and `time` entities ("this week", "last night", "so far", "again").

Label noise: 5% of topic labels are another topic, 5% of sentiment labels are
flipped. About 15% of each task's labels are left empty (missing),
independently, except rating: 85% missing in train, 15% in dev. Dev texts
never repeat a train text. Deterministic: the same seed gives the same bytes.
Standard library only.

    python data/make_sample.py            # writes mtl_keras/data/bundled/sample/
    python data/make_sample.py --out DIR --train 2000 --dev 400 --seed 13
"""

import argparse
import csv
import random
from pathlib import Path

# Each word list is "common words | rare words": a rare word is drawn 1 time in 12.
NOUNS = {
    "sports": "match game striker coach season referee final stadium | goalkeeper penalty tournament",
    "politics": "election senator minister debate policy vote | parliament governor treaty",
    "tech": "phone laptop software app battery browser | processor keyboard server",
    "food": "pizza soup chef dessert salad pasta | curry sandwich croissant",
}
SHARED_NOUNS = {  # one noun, two topics: a text whose only topic noun is one of these is ambiguous
    "team": ("sports", "politics"),
    "campaign": ("politics", "tech"),
    "chips": ("tech", "food"),
    "club": ("sports", "food"),
}
SHARED_RATE = 0.15  # share of topic nouns drawn from SHARED_NOUNS
ASPECTS = {
    "price": "price cost | fee",
    "service": "service staff | crew",
    "quality": "quality design | craft",
    "speed": "speed wait | pace",
}
SHARED_ASPECT = ("value", ("price", "quality"))  # drawn for 1 aspect word in 12
ADJECTIVES = {  # stars -> words; 4-5 positive, 1-2 negative
    5: "brilliant fantastic superb excellent | stellar sublime",
    4: "good nice decent solid | pleasant agreeable",
    2: "dull weak mediocre poor | lacklustre bland",
    1: "terrible awful horrible dreadful | abysmal atrocious",
}
NEGATIONS = "not | never hardly"
NEGATION_RATE = 0.15
OPENERS = ["honestly", "frankly", "overall", "", "", "", "", ""]
ADVERBS = ["really", "very", "", "", "", ""]
TAILS = ["this week", "last night", "as usual", "again", "so far", "", "", "", "", ""]
TIMES = {"this week", "last night", "so far", "again"}  # tails tagged as `time` entities
SHAPES = [  # (weight, how two clauses are joined: None for one clause)
    (0.55, None),
    (0.25, "and"),
    (0.15, "but"),
    (0.05, "although"),
]
MISSING = 0.15
RATING_MISSING = {"train": 0.9, "dev": 0.15}  # rating is the small task
NOISE = 0.05
COLUMNS = ["text", "topic", "sentiment", "rating", "aspects", "mentions"]


def words(spec):
    """(common, rare) words of a "common | rare" list."""
    common, _, rare = spec.partition("|")
    return common.split(), rare.split()


def draw(rng, spec):
    common, rare = words(spec)
    return rng.choice(rare if rare and rng.random() < 1 / 12 else common)


def topic_noun(rng, topic):
    if rng.random() < SHARED_RATE:
        return rng.choice(sorted(n for n, topics in SHARED_NOUNS.items() if topic in topics))
    return draw(rng, NOUNS[topic])


def aspect_word(rng, aspect):
    word, aspects = SHARED_ASPECT
    if aspect in aspects and rng.random() < 1 / 12:
        return word
    return draw(rng, ASPECTS[aspect])


def evaluation(rng, polarity):
    """(words, stars) of "[negation] [adverb] adjective" with the given polarity."""
    negated = rng.random() < NEGATION_RATE
    level = rng.choice([5, 4] if (polarity > 0) != negated else [2, 1])
    stars = level if not negated else (2 if level >= 4 else 4)
    negation = [draw(rng, NEGATIONS)] if negated else []
    adverb = rng.choice(ADVERBS)
    return [*negation, *([adverb] if adverb else []), draw(rng, ADJECTIVES[level])], stars


def subject(rng, topic, aspects):
    """Words of a clause subject: "the price of the pizza", "the pizza" or "the price"."""
    noun = topic_noun(rng, topic) if topic else None
    named = [aspect_word(rng, a) for a in aspects]
    if noun and named:
        return ["the", " and the ".join(named), "of", "the", noun]
    if noun:
        return ["the", noun]
    return ["the", " and the ".join(named)]


def make_text(rng, topic):
    """(words, sentiment 0/1, stars, aspects) of one generated review."""
    shape = rng.choices([s for _, s in SHAPES], [w for w, _ in SHAPES])[0]
    clauses = 1 if shape is None else 2
    count = rng.choices([1, 2], [0.75, 0.25])[0]
    aspects = rng.sample(sorted(ASPECTS), count)
    # which clause names the topic noun, and how the aspects split between clauses
    owners = [rng.randrange(clauses) for _ in aspects]
    noun_clause = rng.randrange(clauses)
    first = rng.choice([1, -1])
    polarities = [first] if shape is None else [first, first if shape == "and" else -first]
    parts, stars = [], None
    for i, polarity in enumerate(polarities):
        mine = [a for a, owner in zip(aspects, owners) if owner == i]
        if i != noun_clause and not mine:  # a clause needs a subject
            mine = [rng.choice([a for a in sorted(ASPECTS) if a not in aspects])]
            aspects.append(mine[0])
        said, stars = evaluation(rng, polarity)
        verb = "were" if len(mine) > 1 else "was"
        parts.append(subject(rng, topic if i == noun_clause else None, mine) + [verb] + said)
    opener, tail = rng.choice(OPENERS), rng.choice(TAILS)
    if shape is None:
        text = [opener, *parts[0], tail]
    elif shape == "although":
        text = ["although", *parts[0], *parts[1], tail]
    else:
        text = [opener, *parts[0], shape, *parts[1], tail]
    sentiment = 1 if polarities[-1] > 0 else 0
    return " ".join(" ".join(text).split()).split(), sentiment, stars, sorted(aspects)


def mention_tags(text_words):
    """IOB2 tags of `text_words`: B-item for a topic noun, B-/I-time for a time tail."""
    nouns = {n for spec in NOUNS.values() for group in words(spec) for n in group} | set(SHARED_NOUNS)
    tags = ["B-item" if word in nouns else "O" for word in text_words]
    for i in range(len(text_words)):
        for size in (2, 1):
            if i + size <= len(text_words) and " ".join(text_words[i : i + size]) in TIMES:
                tags[i : i + size] = ["B-time"] + ["I-time"] * (size - 1)
    return tags


def make_row(rng, split):
    topic = rng.choice(sorted(NOUNS))
    text_words, sentiment, stars, aspects = make_text(rng, topic)
    if rng.random() < 0.1:
        stars = min(5, max(1, stars + rng.choice([-1, 1])))
    if rng.random() < NOISE:
        topic = rng.choice([t for t in sorted(NOUNS) if t != topic])
    if rng.random() < NOISE:
        sentiment = 1 - sentiment
    labels = {
        "topic": topic,
        "sentiment": "positive" if sentiment else "negative",
        "rating": str(stars),
        "aspects": ",".join(aspects),
        "mentions": " ".join(mention_tags(text_words)),
    }
    for name in labels:
        if rng.random() < (RATING_MISSING[split] if name == "rating" else MISSING):
            labels[name] = ""
    return [" ".join(text_words), *(labels[c] for c in COLUMNS[1:])]


def make_rows(rng, count, split, exclude=()):
    rows = []
    while len(rows) < count:
        row = make_row(rng, split)
        if row[0] not in exclude and any(row[1:]):  # every row carries a label
            rows.append(row)
    return rows


def write(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Path(__file__).resolve().parents[1] / "mtl_keras" / "data" / "bundled" / "sample", type=Path)
    parser.add_argument("--train", default=2000, type=int)
    parser.add_argument("--dev", default=400, type=int)
    parser.add_argument("--seed", default=13, type=int)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    train = make_rows(rng, args.train, "train")
    dev = make_rows(rng, args.dev, "dev", exclude={row[0] for row in train})
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.tsv", train)
    write(args.out / "dev.tsv", dev)
    print(f"wrote {len(train)} train and {len(dev)} dev rows to {args.out}")


if __name__ == "__main__":
    main()
