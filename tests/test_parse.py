from groundrec.offline.parse import parse_structured

FIELDS = ["category", "colour", "pattern", "target_group"]


def test_key_value_lines_with_synonyms_and_markdown():
    answer = "Category: Dress\n- **Color**: dark blue.\npattern = striped\nTarget group: women\nextra: ignored"
    p = parse_structured(answer, FIELDS)
    assert p.ok and p.error is None
    assert p.fields == {"category": "Dress", "colour": "dark blue", "pattern": "striped", "target_group": "women"}


def test_json_object_inside_chatter():
    answer = 'Sure! {"category": "bag", "colour": ["red", "white"], "pattern": "solid", "gender": "unisex"} Hope it helps'
    p = parse_structured(answer, FIELDS)
    assert p.ok
    assert p.fields["colour"] == "red, white" and p.fields["target_group"] == "unisex"


def test_missing_fields_are_named_and_partial_values_kept():
    p = parse_structured("category: shoe\ncolour: black", FIELDS)
    assert not p.ok and p.error == "missing field(s): pattern, target_group"
    assert p.fields["category"] == "shoe" and p.fields["pattern"] is None


def test_garbage_and_empty_do_not_raise():
    assert parse_structured("knitted� pin ategoryBlak {not json", FIELDS).ok is False
    empty = parse_structured("   ", FIELDS)
    assert empty.ok is False and empty.error == "empty answer"


def test_an_answer_nested_past_the_json_parser_depth_is_a_parse_failure_not_a_crash():
    """A greedy model stuck on "[" wrote JSON deeper than the parser's recursion limit: the
    RecursionError failed the whole job, and every rerun again (failures are not cached)."""
    answer = '{"colour": ' + "[" * 5000 + "}\ncategory: skirt"
    p = parse_structured(answer, FIELDS)
    assert not p.ok and p.fields["category"] == "skirt" and p.error == "missing field(s): colour, pattern, target_group"


def test_markdown_emphasis_around_a_value_or_a_key_is_not_part_of_it():
    """A chat model's "**Colour:** navy" gave "** navy": stored, embedded and published so (a
    filter colour == navy missed it), and counted as parsed."""
    p = parse_structured("**Colour:** navy\n- **Category**: *dress*.\n__Pattern__: `striped`",
                         ["colour", "category", "pattern"])
    assert p.ok and p.fields == {"colour": "navy", "category": "dress", "pattern": "striped"}
    assert parse_structured('{"category": "t_shirt"}', ["category"]).fields == {"category": "t_shirt"}
