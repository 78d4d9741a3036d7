"""patch_json: the new document in the source's own bytes wherever it did not change."""

from __future__ import annotations

import json

import pytest

from vocabsurgeon.formats.json_file import dump_json, parse_style, patch_json

ODD = (
    '{\n  "version": "1.0",\n  "added_tokens": [ {"id": 0, "content": "[PAD]"} ],\n'
    '  "model": {"vocab" :  {"a": 1,   "b": 2}, "type":"BPE"}\n}\n'
)


def test_unchanged_members_keep_their_bytes_and_the_tail_is_not_rescanned() -> None:
    old = json.loads(ODD)
    new = json.loads(ODD)
    new["added_tokens"].append({"id": 3, "content": "covid"})
    out = patch_json(ODD, old, new, parse_style(ODD))
    assert json.loads(out) == new
    assert '"model": {"vocab" :  {"a": 1,   "b": 2}, "type":"BPE"}' in out  # odd spacing kept verbatim
    assert out.startswith('{\n  "version": "1.0",\n  "added_tokens": ')


def test_a_change_in_the_last_member_patches_inside_it() -> None:
    old = json.loads(ODD)
    new = json.loads(ODD)
    new["model"]["vocab"]["c"] = 3
    out = patch_json(ODD, old, new, parse_style(ODD))
    assert json.loads(out) == new
    assert '"added_tokens": [ {"id": 0, "content": "[PAD]"} ]' in out
    assert '"type":"BPE"' in out


def test_duplicate_keys_in_the_unscanned_tail_still_mean_what_they_meant() -> None:
    text = '{"a": 1, "b": 2, "b": 3}'
    old = json.loads(text)
    new = {**old, "a": 5}
    out = patch_json(text, old, new, parse_style(text))
    assert json.loads(out) == new


@pytest.mark.parametrize("text", ['{"a": 1, "b": 2}', '{"b": 2, "a": 1}', '{"a": {"x": [1, 2]}, "b": null}'])
def test_a_key_order_change_or_new_key_is_serialized_afresh(text: str) -> None:
    old = json.loads(text)
    new = {"z": 0, **old}
    out = patch_json(text, old, new, parse_style(text))
    assert json.loads(out) == new
    assert out == dump_json(new, parse_style(text))


# unchanged members written the way no serializer writes them: kept byte for byte, or the patch re-serialized them
INDENTED = (
    '{\n  "model": {\n    "type": "BPE",\n    "vocab": {\n      "\\u0061":   0,\n      "b" : 1\n    },\n'
    '    "merges": [ "a b" ]\n  }\n}\n'
)
COMPACT = '{"model":{"type":"BPE","vocab":{"\\u0061":0 ,"b":1},"merges":["a b"]}}'
SPACED = '{"model": {"type": "BPE", "vocab": {"\\u0061" :0, "b": 1} , "merges": ["a b"]}}'


@pytest.mark.parametrize(
    ("text", "before", "added"),
    [
        (INDENTED, '"b" : 1', ',\n      "\\u0120COVID": 2,\n      "say \\"hi\\"\\n": 3'),
        (COMPACT, '"b":1', ',"\\u0120COVID":2,"say \\"hi\\"\\n":3'),
        (SPACED, '"b": 1', ', "\\u0120COVID": 2, "say \\"hi\\"\\n": 3'),
    ],
)
def test_members_added_at_the_end_are_written_in_place_and_the_rest_kept(text: str, before: str, added: str) -> None:
    """A vocabulary that grew: the new entries go right after its last member, in the file's style; every other
    byte of the file stays as it was (the odd spacing and the escaped key of the old entries included)."""
    old = json.loads(text)
    new = json.loads(text)
    new["model"]["vocab"].update({"\u0120COVID": 2, 'say "hi"\n': 3})
    out = patch_json(text, old, new, parse_style(text))
    assert out == text.replace(before, before + added, 1)
    assert json.loads(out) == new
    assert list(json.loads(out)["model"]["vocab"]) == ["a", "b", "\u0120COVID", 'say "hi"\n']


def test_members_added_and_changed_together() -> None:
    text = '{"a": {"x": 1, "y": 2}, "b": [1 ], "c": 3}'
    old = json.loads(text)
    new = json.loads(text)
    new["a"]["y"] = 5
    new["a"]["z"] = {"deep": [1, 2]}
    new["d"] = "new"
    out = patch_json(text, old, new, parse_style(text))
    assert out == '{"a": {"x": 1, "y": 5, "z": {"deep": [1, 2]}}, "b": [1 ], "c": 3, "d": "new"}'
