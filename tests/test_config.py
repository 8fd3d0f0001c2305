import pytest
import yaml
from pydantic import ValidationError

from groundrec.offline.config import JobConfig, load_job_config as load_config
from groundrec.shared.config import load_config as load_any


def test_template_must_name_known_fields():
    with pytest.raises(ValidationError, match="vlm_colour"):
        load_config(None, {"encoder.template": "{title} {vlm_colour}"})
    cfg = load_config(None, {"encoder.template": "{title} {vlm_colour}", "prompt.style": "structured"})
    assert "vlm_colour" in cfg.available_text_fields()


def test_bad_template_syntax_is_reported():
    with pytest.raises(ValidationError, match="not a valid format string"):
        load_config(None, {"encoder.template": "{title"})


@pytest.mark.parametrize("template", ["{title:d}", "{title!x}", "{title.upper}", "{tags[0]}", "{}"])
def test_a_template_field_is_a_plain_column_name(template):
    """Values are filled in as text (shared.text.render): a format spec, conversion, attribute or
    index is refused when the config is read, not in the encode stage after grounding."""
    with pytest.raises(ValidationError, match="not a plain column name"):
        load_config(None, {"encoder.template": template})


def test_a_yaml_error_names_the_file_and_an_empty_section_takes_overrides(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("vlm:\n  batch_size: [1\n")
    with pytest.raises(ValueError, match="job.yaml is not valid YAML"):
        load_config(p)
    p.write_text("run:\nvlm:\n  batch_size: 3\n")  # ``run:`` with nothing under it is null
    assert load_config(p, {"run.runner": "local"}).run.runner == "local"
    p.write_text("run: 7\n")
    with pytest.raises(ValueError, match="run is 7 in the config, not a section"):
        load_config(p, {"run.runner": "local"})


def test_openai_backend_needs_endpoint():
    with pytest.raises(ValidationError, match="endpoint"):
        load_config(None, {"vlm.backend": "openai"})


def test_unknown_keys_are_refused(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("vlm:\n  modle: x\n")
    with pytest.raises(ValidationError, match="modle"):
        load_config(p)


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("catalog:\n  path: a.parquet\n  text_columns: [name]\nencoder:\n  template: '{name}'\nvlm:\n  batch_size: 4\n")
    cfg = load_config(p, {"vlm.batch_size": 2, "out": "o"})
    assert cfg.vlm.batch_size == 2 and str(cfg.catalog.path) == "a.parquet" and cfg.catalog.text_columns == ["name"]
    cfg.require_paths()


def test_require_paths_names_what_is_missing():
    with pytest.raises(ValueError, match="--catalog"):
        JobConfig().require_paths()


def test_shipped_job_configs_validate():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[1] / "deploy").glob("*.job.yaml"))
    assert paths  # deploy/hm.job.yaml at least
    for path in paths:
        cfg = load_config(path)
        cfg.require_paths()
        shipped = yaml.safe_load(path.read_text())["catalog"]
        assert (cfg.catalog.text_columns, cfg.catalog.id_column) == (shipped["text_columns"], shipped["id_column"])


def test_shipped_eval_configs_validate():
    from pathlib import Path

    from groundrec.offline.evaluation.config import EvalConfig

    paths = list((Path(__file__).resolve().parents[1] / "deploy").glob("*.eval.yaml"))
    assert paths
    for path in paths:
        cfg = load_any(path, {"out": "/tmp/report"}, EvalConfig)
        cfg.require_paths()
        assert set(cfg.fidelity) <= set(cfg.prompt.fields)  # every scored field is asked for


@pytest.mark.parametrize("key, value, words", [
    ("collab.dropout", [0.0, 1.0], "dropout values must be in [0, 1)"),
    ("collab.fresh_slots", [-1], "grid values must be >= 0"),
    ("collab.fresh_weight", [-0.5], "grid values must be >= 0"),
    ("thumbnails.max_side", 8, "max_side"),
    ("collab.refine", "sometimes", "refine"),
])
def test_bad_collab_and_thumbnail_settings_name_the_setting(key, value, words):
    with pytest.raises((ValidationError, ValueError), match=words.replace("[", r"\[").replace(")", r"\)")):
        load_config(None, {key: value})


def test_bad_serve_event_settings_name_the_setting():
    from groundrec.online.config import ServeConfig

    with pytest.raises(ValidationError, match="default_event_type 'buy' is not one of event_types"):
        ServeConfig(artifacts="/tmp/a", default_event_type="buy")
    with pytest.raises(ValidationError, match="event_types"):
        ServeConfig(artifacts="/tmp/a", event_types={"view": -1})
    with pytest.raises(ValidationError, match="popularity_window_days"):
        ServeConfig(artifacts="/tmp/a", popularity_window_days=0)
    assert ServeConfig(artifacts="/tmp/a", events="none").events_url() is None
    assert ServeConfig(artifacts="s3://bucket/a").events_url() is None  # no default store beside remote artifacts
    assert ServeConfig(artifacts="/tmp/a").events_url() == "sqlite:///tmp/a/events/events.db"


@pytest.mark.parametrize("key", ["out", "cache_dir"])
@pytest.mark.parametrize("value", ["s3://bucket/groundrec", "s3:/bucket/groundrec"])  # the second: a Path's copy
def test_the_job_refuses_to_write_to_an_object_store_uri(key, value):
    """It wrote a local folder ./s3:/bucket/... and reported success."""
    with pytest.raises(ValueError, match="object-store URI"):
        load_config(None, {"catalog.path": "a.parquet", "out": "o", key: value})
    assert str(load_config(None, {key: "/srv/groundrec/artifacts"}).model_dump()[key]) == "/srv/groundrec/artifacts"
