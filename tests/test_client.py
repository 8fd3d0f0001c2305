"""The HTTP client's request bodies (online/client.py): what the caller set and nothing else,
so a newer client still talks to a server that does not know a newer field."""

from groundrec.online.client import _batch_body, _recommend_body, _search_body


def test_bodies_carry_only_what_the_caller_set():
    assert _recommend_body(["a", "b"], 5) == {"history": ["a", "b"], "k": 5}
    assert _recommend_body(["a"], 5, diversity=0.2, max_per={}) == {"history": ["a"], "k": 5, "diversity": 0.2,
                                                                   "max_per": {}}
    assert _batch_body([{"history": ["a"]}, {"history": ["b"], "k": 2}], 3) == {
        "batch": [{"history": ["a"], "k": 3}, {"history": ["b"], "k": 2}]}
    assert _search_body("black top", 4, with_fields=True) == {"text": "black top", "k": 4, "with_fields": True}
