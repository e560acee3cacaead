"""Atomic-file loading, the time split, leakage and the one-line errors for bad input."""

from pathlib import Path

import numpy as np
import pytest

from apps.recommendation.candidates import _write_benchmark_files
from apps.recommendation.data import DataSpec, load_dataset, read_atomic
from shared.errors import ScenarioError

ITEM_HEADER = "item_id:token\ttitle:token_seq\tgenres:token_seq\n"


def write_dataset(folder: Path, inter_lines: list[str], items: int = 6, name: str = "toy") -> DataSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(inter_lines), encoding="utf-8")
    (folder / f"{name}.item").write_text(ITEM_HEADER + "".join(f"i{n}\tMovie {n}\tDrama\n" for n in range(items)), encoding="utf-8")
    return DataSpec(path=str(folder), dataset=name, text_fields=["title", "genres"])


def test_timestamps_keep_int64_precision_and_file_order(tmp_path):
    # These timestamps differ by 1 ms but are equal as float32; ties keep the raw line order.
    lines = [
        "u1\ti3\t4.0\t1600000000124\n",
        "u1\ti1\t4.0\t1600000000123\n",
        "u1\ti0\t4.0\t1600000000125\n",
        "u1\ti4\t4.0\t1600000000125\n",
        "u1\ti2\t4.0\t1600000000126\n",
    ]
    data = load_dataset(write_dataset(tmp_path, lines))
    assert data.train.timestamp.dtype == np.int64
    tokens = [data.item_tokens[i] for i in data.train_histories()[0]]
    assert tokens == ["i1", "i3", "i0"]
    assert data.item_tokens[data.valid_item[0]] == "i4"
    assert data.item_tokens[data.test_item[0]] == "i2"
    assert data.test_time[0] == 1600000000126


def test_users_with_short_history_are_train_only(tmp_path):
    lines = ["a\ti0\t1\t1\n", "a\ti1\t1\t2\n", "b\ti0\t1\t1\n", "b\ti1\t1\t2\n", "b\ti2\t1\t3\n"]
    data = load_dataset(write_dataset(tmp_path, lines))
    assert data.test_item.tolist()[0] == -1
    assert data.test_users().tolist() == [1]
    assert len(data.train_histories()[0]) == 2


def test_repeated_heldout_item_is_removed_from_training(tmp_path):
    # The user saw i2 early and again last: the early repeat must not leak the test item.
    lines = ["a\ti2\t1\t1\n", "a\ti0\t1\t2\n", "a\ti1\t1\t3\n", "a\ti2\t1\t4\n"]
    data = load_dataset(write_dataset(tmp_path, lines))
    history = [data.item_tokens[i] for i in data.train_histories()[0]]
    assert history == ["i0"]


def test_no_heldout_item_in_any_training_history():
    data = load_dataset(DataSpec())
    histories = data.train_histories()
    users = data.test_users()
    assert len(users) == 610
    for user in users:
        assert data.test_item[user] not in histories[user]
        assert data.valid_item[user] not in histories[user]
        # Held-out items are the user's latest: nothing in training is newer.
        assert data.valid_time[user] <= data.test_time[user]
    train_pairs = set(zip(data.train.user.tolist(), data.train.item.tolist()))
    for user in users:
        assert (user, int(data.test_item[user])) not in train_pairs
        assert (user, int(data.valid_item[user])) not in train_pairs


def test_recbole_train_file_is_the_training_split(tmp_path):
    lines = [f"u{u}\ti{(u + n) % 6}\t1\t{n}\n" for u in range(3) for n in range(5)]
    data = load_dataset(write_dataset(tmp_path / "src", lines))
    folder = tmp_path / "recbole"
    folder.mkdir()
    _write_benchmark_files(data, folder, sequential=False, max_seq_length=20, max_targets=30)
    rows = (folder / "toy.train.inter").read_text().splitlines()[1:]
    expected = [f"{data.user_tokens[u]}\t{data.item_tokens[i]}" for u, history in enumerate(data.train_histories()) for i in history]
    assert rows == expected
    test_rows = (folder / "toy.test.inter").read_text().splitlines()[1:]
    assert test_rows == [f"u{u}\ti{(u + 4) % 6}" for u in range(3)]
    for row in test_rows:
        assert row not in rows


def test_sequential_files_hold_only_training_prefixes(tmp_path):
    lines = [f"u0\ti{n}\t1\t{n}\n" for n in range(6)]
    data = load_dataset(write_dataset(tmp_path / "src", lines))
    folder = tmp_path / "recbole"
    folder.mkdir()
    _write_benchmark_files(data, folder, sequential=True, max_seq_length=20, max_targets=30)
    rows = (folder / "toy.train.inter").read_text().splitlines()[1:]
    assert rows == ["u0\ti0\ti1", "u0\ti0 i1\ti2", "u0\ti0 i1 i2\ti3"]
    assert (folder / "toy.valid.inter").read_text().splitlines()[1:] == ["u0\ti0 i1 i2 i3\ti4"]
    assert (folder / "toy.test.inter").read_text().splitlines()[1:] == ["u0\ti0 i1 i2 i3 i4\ti5"]


def test_missing_atomic_file(tmp_path):
    with pytest.raises(ScenarioError, match=r"toy\.inter: atomic file not found"):
        load_dataset(DataSpec(path=str(tmp_path), dataset="toy"))


def test_wrong_field_separator(tmp_path):
    path = tmp_path / "toy.inter"
    path.write_text("user_id:token,item_id:token,rating:float,timestamp:float\nu,i,1,2\n")
    with pytest.raises(ScenarioError) as error:
        read_atomic(path, "\t")
    message = str(error.value)
    assert "line 1" in message
    assert "separated by ','" in message
    assert "\n" not in message


def test_non_numeric_float_names_line_and_field(tmp_path):
    lines = ["u\ti0\t4.0\t1\n", "u\ti1\tfive\t2\n", "u\ti2\t3.0\t3\n"]
    with pytest.raises(ScenarioError) as error:
        load_dataset(write_dataset(tmp_path, lines))
    message = str(error.value)
    assert "toy.inter" in message
    assert "line 3, field rating" in message
    assert "'five' is not a number" in message


def test_missing_text_field(tmp_path):
    spec = write_dataset(tmp_path, ["u\ti0\t1\t1\n"])
    (tmp_path / "toy.item").write_text("item_id:token\tprice:float\ni0\t3.5\n")
    with pytest.raises(ScenarioError, match=r"text field\(s\) title, genres not found"):
        load_dataset(spec)
    with pytest.raises(ScenarioError, match="needs at least one text field"):
        load_dataset(spec.model_copy(update={"text_fields": []}))
    with pytest.raises(ScenarioError, match="are not text"):
        load_dataset(spec.model_copy(update={"text_fields": ["price"]}))


def test_missing_field_names_file_fields(tmp_path):
    spec = write_dataset(tmp_path, ["u\ti0\t1\t1\n"]).model_copy(update={"time_field": "ts"})
    with pytest.raises(ScenarioError, match=r"missing field\(s\) ts"):
        load_dataset(spec)
