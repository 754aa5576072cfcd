"""Generates the bundled multi-task sample: mtl_keras/data/bundled/sample/{train,dev}.tsv.

The data is synthetic (template sentences, not real text). Each row is a short
English-like review with four labels:

* topic (multiclass): sports, politics, tech or food, cued by its nouns;
* sentiment (binary): negative or positive, cued by its adjective;
* rating (regression, 1-5 stars): 5/4 for strong/mild positive adjectives,
  2/1 for mild/strong negative ones, moved by one star in 10% of rows;
* mentions (tagging, IOB2, one tag per word): `item` entities (the topic
  nouns) and `time` entities ("this week", "last night", "so far", "again").

About 15% of each task's labels are left empty (missing), independently. The
mentions column comes from a second random stream, so the other columns are
the same as before it existed.
Dev texts never repeat a train text. Deterministic: the same seed gives the
same bytes. Standard library only.

    python data/make_sample.py            # writes mtl_keras/data/bundled/sample/
    python data/make_sample.py --out DIR --train 2000 --dev 400 --seed 13
"""

import argparse
import csv
import random
import re
from pathlib import Path

NOUNS = {
    "sports": "match game striker goalkeeper coach season tournament referee "
    "final team race league stadium penalty champion",
    "politics": "election senator parliament minister campaign debate policy "
    "vote governor bill president party reform budget treaty",
    "tech": "phone laptop software update app processor website battery "
    "startup chip browser robot camera server keyboard",
    "food": "pizza soup restaurant chef dessert salad bread menu burger pasta "
    "coffee cake curry sandwich breakfast",
}
ADJECTIVES = {  # stars -> words; 4-5 positive, 1-2 negative
    5: "brilliant fantastic superb wonderful outstanding excellent",
    4: "good nice decent pleasant solid enjoyable",
    2: "disappointing dull weak mediocre poor boring",
    1: "terrible awful horrible dreadful disastrous appalling",
}
OPENERS = "honestly well frankly overall clearly apparently".split()
ADVERBS = ["really", "quite", "very", "truly", "rather", ""]
TAILS = ["this week", "last night", "as usual", "if you ask me", "again", "so far", ""]
TEMPLATES = [
    "the {n1} was {adv} {adj} {tail}",
    "{opener} the {n1} and the {n2} were {adj}",
    "i found the {n1} {adj} {tail}",
    "what a {adj} {n1} {tail}",
    "{opener} the new {n1} is {adv} {adj}",
    "the {n1} {tail} was {adj} and so was the {n2}",
]
TIMES = {"this week", "last night", "so far", "again"}  # tails tagged as `time` entities
MISSING = 0.15
COLUMNS = ["text", "topic", "sentiment", "rating", "mentions"]


def mention_tags(words):
    """IOB2 tags of `words`: B-item for a topic noun, B-/I-time for a time tail."""
    nouns = {noun for group in NOUNS.values() for noun in group.split()}
    tags = ["B-item" if word in nouns else "O" for word in words]
    for i in range(len(words)):
        for size in (2, 1):
            if i + size <= len(words) and " ".join(words[i : i + size]) in TIMES:
                tags[i : i + size] = ["B-time"] + ["I-time"] * (size - 1)
    return tags


def make_row(rng, tag_rng):
    topic = rng.choice(sorted(NOUNS))
    stars = rng.choice(sorted(ADJECTIVES))
    n1, n2 = rng.sample(NOUNS[topic].split(), 2)
    text = rng.choice(TEMPLATES).format(
        n1=n1,
        n2=n2,
        adj=rng.choice(ADJECTIVES[stars].split()),
        adv=rng.choice(ADVERBS),
        opener=rng.choice(OPENERS),
        tail=rng.choice(TAILS),
    )
    rating = stars
    if rng.random() < 0.1:
        rating = min(5, max(1, stars + rng.choice([-1, 1])))
    labels = [topic, "positive" if stars >= 4 else "negative", str(rating)]
    labels = ["" if rng.random() < MISSING else label for label in labels]
    text = re.sub(r"\ba (?=[aeiou])", "an ", " ".join(text.split()))
    tags = "" if tag_rng.random() < MISSING else " ".join(mention_tags(text.split()))
    return [text, *labels, tags]


def make_rows(rng, tag_rng, count, exclude=()):
    rows = []
    while len(rows) < count:
        row = make_row(rng, tag_rng)
        if row[0] not in exclude:
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
    rng, tag_rng = random.Random(args.seed), random.Random(args.seed + 1)
    train = make_rows(rng, tag_rng, args.train)
    dev = make_rows(rng, tag_rng, args.dev, exclude={row[0] for row in train})
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.tsv", train)
    write(args.out / "dev.tsv", dev)
    print(f"wrote {len(train)} train and {len(dev)} dev rows to {args.out}")


if __name__ == "__main__":
    main()
