"""RecBole atomic files: conversion from MovieLens CSV, loading, and the leave-last-2 split per user.

An atomic file is a tab-separated table whose header names each column as ``name:type`` with type
``token``, ``token_seq``, ``float`` or ``float_seq``. ``DATASET.inter`` contains the interactions and
``DATASET.item`` the item features. Any atomic dataset loads through :class:`DataSpec`, which names
the user, item, rating and time fields and the item fields that form the item's text.

Rebuild the shipped copy of MovieLens ml-latest-small with::

    python -m apps.recommendation.data convert /path/to/ml-latest-small apps/recommendation/data/ml-latest-small
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ScenarioError, located

logger = logging.getLogger("scenariolab.apps.recommendation.data")

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
DEFAULT_DATASET_DIR = Path(__file__).resolve().parent / "data" / "ml-latest-small"


class DataSpec(BaseModel):
    """Location of an atomic dataset and the mapping of its fields onto user, item, rating, time and text."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Folder with DATASET.inter and DATASET.item; relative to the scenario file. None: the shipped ml-latest-small.")
    dataset: str = "ml-latest-small"
    field_separator: str = "\t"
    seq_separator: str = " "
    user_field: str = "user_id"
    item_field: str = "item_id"
    rating_field: str | None = "rating"
    time_field: str = "timestamp"
    text_fields: list[str] = Field(default_factory=lambda: ["title", "year", "genres"])
    max_users: int | None = Field(None, ge=3, description="Keep only the first N users (by first appearance) for quick runs.")


@dataclass
class AtomicTable:
    """One parsed atomic file: column values by field name and each field's declared type."""

    path: Path
    columns: dict[str, np.ndarray]
    types: dict[str, str]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class Interactions:
    """Interactions as parallel arrays over dense ids; ``order`` is the row's line order in the raw file."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> "Interactions":
        return Interactions(self.user[mask], self.item[mask], self.rating[mask], self.timestamp[mask], self.order[mask])


@dataclass
class SplitDataset:
    """A dataset after the leave-last-2 split, with dense user and item ids.

    ``train`` is every interaction a model, the preference model or the simulator may learn from.
    ``valid_item[u]`` and ``test_item[u]`` are the user's second-to-last and last items (-1 when the
    user has fewer than three interactions and so is kept for training only).
    """

    name: str
    user_tokens: np.ndarray
    item_tokens: np.ndarray
    item_text: list[str]
    item_title: list[str]
    train: Interactions
    valid_item: np.ndarray
    test_item: np.ndarray
    valid_time: np.ndarray
    test_time: np.ndarray
    source: Path
    text_hash: str
    histories: list[np.ndarray] = field(default_factory=list)

    @property
    def num_users(self) -> int:
        return len(self.user_tokens)

    @property
    def num_items(self) -> int:
        return len(self.item_tokens)

    def train_histories(self) -> list[np.ndarray]:
        """Return each user's training items in time order (raw line order breaks timestamp ties)."""
        if not self.histories:
            sort = np.lexsort((self.train.order, self.train.timestamp, self.train.user))
            users = self.train.user[sort]
            items = self.train.item[sort]
            bounds = np.searchsorted(users, np.arange(self.num_users + 1))
            self.histories = [items[bounds[u] : bounds[u + 1]] for u in range(self.num_users)]
        return self.histories

    def item_popularity(self) -> np.ndarray:
        """Return each item's share of the training interactions (add-one smoothed, sums to 1)."""
        counts = np.bincount(self.train.item, minlength=self.num_items).astype(np.float64) + 1.0
        return counts / counts.sum()

    def test_users(self) -> np.ndarray:
        return np.flatnonzero(self.test_item >= 0)

    def split_signature(self) -> str:
        """Return a hash of the split (users, items, training pairs, held-out items) to match saved artefacts."""
        digest = hashlib.sha256()
        for array in (self.train.user, self.train.item, self.valid_item, self.test_item):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update("\n".join(map(str, self.user_tokens)).encode("utf-8"))
        digest.update("\n".join(map(str, self.item_tokens)).encode("utf-8"))
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading atomic files


def read_atomic(path: Path, separator: str = "\t", required: tuple[str, ...] = (), numeric_as: dict[str, str] | None = None, header_only: bool = False) -> AtomicTable:
    """Parse an atomic file; every problem becomes one ScenarioError line naming the file, line and field.

    ``numeric_as`` maps a field to ``int64`` or ``float64`` for columns that must parse as numbers
    whatever type the header declares.
    """
    if not path.is_file():
        raise ScenarioError(located(str(path), None, "atomic file not found"))
    with path.open(encoding="utf-8", newline="") as handle:
        header_line = handle.readline().rstrip("\r\n")
    header = header_line.split(separator)
    names: list[str] = []
    types: dict[str, str] = {}
    for position, column in enumerate(header, start=1):
        name, colon, kind = column.partition(":")
        if not colon or kind not in ATOMIC_TYPES:
            hint = ""
            for other in ("\t", ",", ";", "|", " "):
                if other != separator and len(header_line.split(other)) > 1 and all(":" in part for part in header_line.split(other)):
                    hint = f" The header looks separated by {other!r}; set settings.data.field_separator to it."
                    break
            raise ScenarioError(
                located(str(path), f"line 1, column {position}", f"header entry {column!r} is not name:type with type in {', '.join(ATOMIC_TYPES)} (field separator {separator!r}).{hint}")
            )
        names.append(name)
        types[name] = kind
    missing = [name for name in required if name not in types]
    if missing:
        raise ScenarioError(located(str(path), "header", f"missing field(s) {', '.join(missing)}; the file has {', '.join(names)}"))
    if header_only:
        return AtomicTable(path, {}, types)

    try:
        frame = pd.read_csv(
            path, sep=separator, header=0, names=names, dtype=str, keep_default_na=False,
            quoting=csv.QUOTE_NONE, engine="c", encoding="utf-8",
        )
    except pd.errors.ParserError as error:
        match = re.search(r"line (\d+)", str(error))
        where = f"line {match.group(1)}" if match else None
        raise ScenarioError(located(str(path), where, f"wrong number of fields (expected {len(names)} separated by {separator!r})")) from None

    columns: dict[str, np.ndarray] = {}
    numeric_as = numeric_as or {}
    for name in names:
        values = frame[name].to_numpy()
        target = numeric_as.get(name) or ("float64" if types[name] == "float" else None)
        if target is not None:
            columns[name] = _parse_numeric(values, target, path, name)
        else:
            columns[name] = values.astype(object)
    return AtomicTable(path, columns, types)


def _parse_numeric(values: np.ndarray, dtype: str, path: Path, name: str) -> np.ndarray:
    """Convert strings to numbers, naming the first bad line (line 1 is the header).

    For ``int64`` columns (timestamps), integer strings parse straight to int64, so no precision is
    lost through float64; integral floats such as ``964982703.0`` are accepted too.
    """
    numbers = pd.to_numeric(pd.Series(values), errors="coerce")
    bad = np.flatnonzero(numbers.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ScenarioError(located(str(path), f"line {row + 2}, field {name}", f"{values[row]!r} is not a number"))
    if dtype == "int64":
        if np.issubdtype(numbers.dtype, np.integer):
            return numbers.to_numpy(dtype=np.int64)
        array = numbers.to_numpy(dtype=np.float64)
        return array.astype(np.int64) if np.all(np.mod(array, 1) == 0) else array
    return numbers.to_numpy(dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Loading and splitting


def dataset_folder(spec: DataSpec, base: Path | None) -> Path:
    """Resolve ``spec.path`` relative to ``base`` (the scenario file's folder); None means the shipped data."""
    if spec.path is None:
        return DEFAULT_DATASET_DIR
    path = Path(spec.path)
    return path if path.is_absolute() or base is None else (base / path).resolve()


def read_header(path: Path, separator: str) -> dict[str, str]:
    """Return the ``name: type`` pairs of an atomic file's header, raising ScenarioError on a bad one."""
    return read_atomic(path, separator, header_only=True).types


def check_dataset(spec: DataSpec, base: Path | None = None, source: str = "settings.data") -> None:
    """Check the atomic files' presence, separator and fields from their headers alone (cheap)."""
    folder = dataset_folder(spec, base)
    inter = read_header(folder / f"{spec.dataset}.inter", spec.field_separator)
    required = [spec.user_field, spec.item_field, spec.time_field] + ([spec.rating_field] if spec.rating_field else [])
    missing = [name for name in required if name not in inter]
    if missing:
        raise ScenarioError(located(str(folder / f"{spec.dataset}.inter"), "header", f"missing field(s) {', '.join(missing)}; the file has {', '.join(inter)}"))
    item_path = folder / f"{spec.dataset}.item"
    if not spec.text_fields:
        raise ScenarioError(located(source, "text_fields", f"the item encoder needs at least one text field of {item_path.name}"))
    item = read_header(item_path, spec.field_separator)
    unknown = [name for name in spec.text_fields if name not in item]
    if unknown:
        raise ScenarioError(located(str(item_path), "header", f"text field(s) {', '.join(unknown)} not found; the file has {', '.join(item)}"))


def load_dataset(spec: DataSpec, base: Path | None = None, need_text: bool = True, source: str = "settings.data") -> SplitDataset:
    """Load ``DATASET.inter`` and ``DATASET.item`` and split each user's history by time (leave-last-2)."""
    folder = dataset_folder(spec, base)
    inter_path = folder / f"{spec.dataset}.inter"
    item_path = folder / f"{spec.dataset}.item"
    required = [spec.user_field, spec.item_field, spec.time_field] + ([spec.rating_field] if spec.rating_field else [])
    numeric = {spec.time_field: "int64"}
    if spec.rating_field:
        numeric[spec.rating_field] = "float64"
    inter = read_atomic(inter_path, spec.field_separator, tuple(required), numeric)

    item_table: AtomicTable | None = None
    if item_path.is_file() or need_text:
        item_table = read_atomic(item_path, spec.field_separator, (spec.item_field,))
    if need_text:
        assert item_table is not None
        if not spec.text_fields:
            raise ScenarioError(located(source, "text_fields", f"the item encoder needs at least one text field; {item_path.name} has {', '.join(item_table.columns)}"))
        missing = [name for name in spec.text_fields if name not in item_table.columns]
        if missing:
            raise ScenarioError(located(str(item_path), "header", f"text field(s) {', '.join(missing)} not found; the file has {', '.join(item_table.columns)}"))
        not_text = [name for name in spec.text_fields if item_table.types[name] not in ("token", "token_seq")]
        if not_text:
            raise ScenarioError(located(str(item_path), "header", f"field(s) {', '.join(not_text)} are not text (token or token_seq) and cannot form the item text"))

    users_raw = inter.columns[spec.user_field].astype(str)
    items_raw = inter.columns[spec.item_field].astype(str)
    if spec.max_users is not None:
        first_users = pd.unique(users_raw)[: spec.max_users]
        keep = np.isin(users_raw, first_users)
    else:
        keep = np.ones(len(users_raw), dtype=bool)

    # Item ids cover the item table (so the text cache is the same for any user slice) plus any item
    # that only appears in interactions.
    catalogue = list(item_table.columns[spec.item_field].astype(str)) if item_table is not None else []
    item_tokens = np.array(list(dict.fromkeys(catalogue + list(pd.unique(items_raw)))), dtype=object)
    item_index = {token: index for index, token in enumerate(item_tokens)}
    user_tokens = pd.unique(users_raw[keep]).astype(object)
    user_index = {token: index for index, token in enumerate(user_tokens)}

    rows = np.flatnonzero(keep)
    user = np.array([user_index[token] for token in users_raw[keep]], dtype=np.int64)
    item = np.array([item_index[token] for token in items_raw[keep]], dtype=np.int64)
    rating = inter.columns[spec.rating_field][keep] if spec.rating_field else np.ones(len(rows))
    timestamp = inter.columns[spec.time_field][keep]
    everything = Interactions(user, item, np.asarray(rating, dtype=np.float64), timestamp, rows.astype(np.int64))

    texts, titles = _item_texts(item_table, spec, item_tokens) if need_text and item_table is not None else ([""] * len(item_tokens), [str(t) for t in item_tokens])
    text_hash = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    return split_leave_last_two(everything, user_tokens, item_tokens, texts, titles, spec.dataset, folder, text_hash)


def _item_texts(table: AtomicTable, spec: DataSpec, item_tokens: np.ndarray) -> tuple[list[str], list[str]]:
    """Join the text fields of each item into one string for the encoder, and pick a display title."""
    by_token: dict[str, tuple[str, str]] = {}
    ids = table.columns[spec.item_field].astype(str)
    parts = [table.columns[name].astype(str) for name in spec.text_fields]
    for row, token in enumerate(ids):
        values = [str(column[row]).strip() for column in parts]
        text = ". ".join(value for value in values if value)
        by_token[token] = (text, values[0] if values and values[0] else token)
    texts, titles = [], []
    for token in item_tokens:
        text, title = by_token.get(str(token), (str(token), str(token)))
        texts.append(text)
        titles.append(title)
    return texts, titles


def split_leave_last_two(
    data: Interactions,
    user_tokens: np.ndarray,
    item_tokens: np.ndarray,
    texts: list[str],
    titles: list[str],
    name: str,
    source: Path,
    text_hash: str,
) -> SplitDataset:
    """Hold out each user's last item for test and second-to-last for validation.

    Time order uses the exact int64 timestamp and, for equal timestamps, the raw file's line order.
    Users with fewer than three interactions keep all of them in training and have no test item.
    Training drops any repeat of the user's own validation or test item, so no held-out item appears
    in a history that a model learns from.
    """
    num_users = len(user_tokens)
    sort = np.lexsort((data.order, data.timestamp, data.user))
    ordered = Interactions(data.user[sort], data.item[sort], data.rating[sort], data.timestamp[sort], data.order[sort])
    counts = np.bincount(ordered.user, minlength=num_users)
    ends = np.cumsum(counts)
    valid_item = np.full(num_users, -1, dtype=np.int64)
    test_item = np.full(num_users, -1, dtype=np.int64)
    valid_time = np.zeros(num_users, dtype=ordered.timestamp.dtype)
    test_time = np.zeros(num_users, dtype=ordered.timestamp.dtype)
    in_train = np.ones(len(ordered), dtype=bool)
    eligible = counts >= 3
    last = ends[eligible] - 1
    test_item[eligible] = ordered.item[last]
    valid_item[eligible] = ordered.item[last - 1]
    test_time[eligible] = ordered.timestamp[last]
    valid_time[eligible] = ordered.timestamp[last - 1]
    in_train[last] = False
    in_train[last - 1] = False
    held_out = (ordered.item == valid_item[ordered.user]) | (ordered.item == test_item[ordered.user])
    in_train &= ~held_out
    return SplitDataset(
        name=name,
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        item_text=texts,
        item_title=titles,
        train=ordered.subset(in_train),
        valid_item=valid_item,
        test_item=test_item,
        valid_time=valid_time,
        test_time=test_time,
        source=source,
        text_hash=text_hash,
    )


# ---------------------------------------------------------------------------------------------
# Conversion from the MovieLens CSV release

_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def convert_movielens(source: Path, target: Path, name: str = "ml-latest-small") -> tuple[int, int]:
    """Write ``NAME.inter`` and ``NAME.item`` from MovieLens ``ratings.csv`` and ``movies.csv``.

    Rows keep the CSV's order, and timestamps are written as exact integers. Titles lose their
    ``(YEAR)`` suffix, which becomes the ``year`` field; genres become space-separated tokens.
    Returns the number of interactions and items written.
    """
    ratings_path = source / "ratings.csv"
    movies_path = source / "movies.csv"
    for path in (ratings_path, movies_path):
        if not path.is_file():
            raise ScenarioError(located(str(path), None, "file not found; expected a MovieLens release folder"))
    target.mkdir(parents=True, exist_ok=True)
    ratings = pd.read_csv(ratings_path, dtype={"userId": str, "movieId": str, "rating": str, "timestamp": str}, keep_default_na=False)
    with (target / f"{name}.inter").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, stamp in zip(ratings["userId"], ratings["movieId"], ratings["rating"], ratings["timestamp"]):
            handle.write(f"{user}\t{item}\t{rating}\t{stamp}\n")
    movies = pd.read_csv(movies_path, dtype=str, keep_default_na=False)
    with (target / f"{name}.item").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq\n")
        for item, title, genres in zip(movies["movieId"], movies["title"], movies["genres"]):
            match = _YEAR.match(title.strip())
            clean, year = (match.group(1), match.group(2)) if match else (title.strip(), "")
            clean = _clean_text(clean)
            genre_text = "" if genres == "(no genres listed)" else " ".join(part.replace(" ", "-") for part in genres.split("|"))
            handle.write(f"{item}\t{clean}\t{year}\t{genre_text}\n")
    readme = source / "README.txt"
    if readme.is_file():
        shutil.copyfile(readme, target / "README.txt")
    return len(ratings), len(movies)


def _clean_text(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apps.recommendation.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert a MovieLens CSV release into RecBole atomic files")
    convert.add_argument("source", type=Path, help="folder with ratings.csv and movies.csv")
    convert.add_argument("target", type=Path, help="output folder for NAME.inter, NAME.item and README.txt")
    convert.add_argument("--name", default="ml-latest-small", help="dataset name, the stem of the atomic files")
    args = parser.parse_args(argv)
    try:
        interactions, items = convert_movielens(args.source, args.target, args.name)
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {interactions} interactions and {items} items to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
