"""Config loading: layering, overrides, and one clear error per kind of mistake."""

from __future__ import annotations

import re

import pytest

from dask_pipeline.config import Config, load_config
from dask_pipeline.errors import ConfigError

from .conftest import REPO


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_quickstart_loads_and_names_its_run():
    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    assert cfg.graph == "walkforward"
    assert cfg.output.run_name == "quickstart"
    assert cfg.data.synthetic.symbols == 8
    assert cfg.data.synthetic.start == "2016-01-01"  # an unquoted YAML date stays ISO text
    assert cfg.run_dir.name == "quickstart" and cfg.run_dir.is_absolute()


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.cluster.kind == "local" and cfg.cluster.threads_per_worker == 1


def test_unknown_key_names_path_and_closest_name(tmp_path):
    path = write(tmp_path, "cluster:\n  n_workres: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "unknown key 'cluster.n_workres'" in msg and "did you mean 'n_workers'" in msg
    assert str(path) in msg and "\n" not in msg


def test_unknown_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'clustr' \(did you mean 'cluster'\?\)"):
        load_config(write(tmp_path, "clustr: {kind: local}\n"))


def test_bad_type_names_key_value_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "cluster:\n  n_workers: lots\n"))
    msg = str(err.value)
    assert "'cluster.n_workers'" in msg and "'lots'" in msg and "integer" in msg


def test_bad_enum_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "cluster:\n  kind: lokal\n"))
    msg = str(err.value)
    assert "'cluster.kind'" in msg and "'lokal'" in msg and "'local-cuda'" in msg and "'address'" in msg


def test_range_and_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"'cluster.n_workers': Input should be greater than or equal to 1 \(got 0\)"):
        load_config(write(tmp_path, "cluster: {n_workers: 0}\n"))
    with pytest.raises(ConfigError, match="address is only used with kind 'address'"):
        load_config(write(tmp_path, "cluster: {address: 'tcp://1.2.3.4:8786'}\n"))
    with pytest.raises(ConfigError, match="no protocol"):
        load_config(write(tmp_path, "cluster: {kind: address, address: '1.2.3.4:8786'}\n"))


def test_bad_date_and_unknown_graph(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.start': 'yesterday-ish' is not a date"):
        load_config(write(tmp_path, "data: {start: yesterday-ish}\n"))
    with pytest.raises(ConfigError, match=r"'graph': .*unknown graph \(did you mean 'datacheck'\?\)"):
        load_config(write(tmp_path, "graph: datachek\n"))


def test_several_mistakes_reported_together_on_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "cluster: {kind: lokal, n_workers: -1}\nseed: x\n"))
    msg = str(err.value)
    assert msg.count(";") >= 2 and "\n" not in msg


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+: not valid YAML"):
        load_config(write(tmp_path, "cluster:\n  kind: [local\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = write(tmp_path, "cluster: {n_workers: 2}\n")
    cfg = load_config(path, ["cluster.n_workers=3", "cluster.dashboard=false", "data.symbols=[A, B]"])
    assert cfg.cluster.n_workers == 3 and cfg.cluster.dashboard is False
    assert cfg.data.symbols == ["A", "B"]
    with pytest.raises(ConfigError, match="unknown key 'cluster.workers'"):
        load_config(path, ["cluster.workers=3"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["cluster.n_workers"])


def test_profile_and_preset_layer_under_the_file(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.yaml").write_text("cluster: {n_workers: 32, memory_limit: 4GiB}\n")
    path = write(tmp_path, "profile: big\ncluster: {n_workers: 8}\n")
    cfg = load_config(path)
    assert cfg.cluster.n_workers == 8  # the file wins over its profile
    assert cfg.cluster.memory_limit == "4GiB"  # what the file leaves out comes from the profile
    assert load_config(path, ["cluster.n_workers=2"]).cluster.n_workers == 2  # overrides win over all


def test_unknown_profile_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown profile 'gpu-nod' \(did you mean 'gpu-node'\?\)"):
        load_config(write(tmp_path, "profile: gpu-nod\n"))


def test_repo_profiles_load():
    for name in ("gpu-node", "laptop", "remote"):
        path = REPO / "configs" / "profiles" / f"{name}.yaml"
        assert load_config(path).cluster.kind in {"local", "local-cuda", "address"}


def test_digest_ignores_cluster_and_output():
    a = load_config(overrides=["cluster.n_workers=1", "output.dir=/tmp/x"])
    b = load_config(overrides=["cluster.n_workers=4"])
    c = load_config(overrides=["seed=1"])
    assert a.digest() == b.digest() != c.digest()


def test_cross_section_checks_name_both_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "model: {name: ridge}\nlabel: {task: classification}\n"))
    assert "'ridge'" in str(err.value) and "<top>" not in str(err.value)
    with pytest.raises(ConfigError, match=r"folds.purge 2 is shorter than label.horizon 5"):
        load_config(write(tmp_path, "folds: {purge: 2}\nlabel: {horizon: 5}\n"))


def test_digest_ignores_where_features_are_cached(tmp_path):
    a = load_config(overrides=["features.cache_dir=/tmp/a", "features.cache=false"])
    assert a.digest() == load_config().digest()


def test_preset_can_be_chosen_on_the_command_line():
    quick = REPO / "configs" / "quickstart.yaml"
    assert load_config(quick).model.preset == "fast"
    assert load_config(quick, ["preset=blank"]).model.preset == "blank"


@pytest.mark.parametrize("text, shown", [
    ("postgresql://optuna:hunter2@db.internal:5432/studies", "postgresql://optuna:***@db.internal:5432/studies"),
    ("mysql+pymysql://root:p@ss@10.0.0.2/db?charset=utf8", "mysql+pymysql://root:***@10.0.0.2/db?charset=utf8"),
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
    ("s3://bucket/bars?token=abc123&region=eu", "s3://bucket/bars?token=***&region=eu"),
    ("sqlite:///results/study.db", "sqlite:///results/study.db"),
    ("tls://10.0.0.5:8786 and tcp://h:1", "tls://10.0.0.5:8786 and tcp://h:1"),
    ("cannot reach tcp://user:pass@10.0.0.5:8786: timed out", "cannot reach tcp://user:***@10.0.0.5:8786: timed out"),
    ("mysql://alice:pa ss@db.internal/optuna", "mysql://alice:***@db.internal/optuna"),
    ("storage 'mysql://alice:pa ss w@rd@db/x' failed", "storage 'mysql://alice:***@db/x' failed"),
    ("a: postgresql://u:p1@h/x\nb: mysql://v:p 2@h/y\n", "a: postgresql://u:***@h/x\nb: mysql://v:***@h/y\n"),
    ("https://api.example.com/bars?access_token=abc&api_key=k1&apikey=k2&page=2",
     "https://api.example.com/bars?access_token=***&api_key=***&apikey=***&page=2"),
    ("s3://b/p?X-Amz-Credential=AKIA%2F20240101&X-Amz-Signature=deadbeef&X-Amz-Security-Token=t&X-Amz-Expires=60",
     "s3://b/p?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&X-Amz-Expires=60"),
    ("gs://b/o?X-Goog-Signature=ab&sig=cd&client_secret=ef&db_password=gh&user_pwd=ij&PASSWD=kl",
     "gs://b/o?X-Goog-Signature=***&sig=***&client_secret=***&db_password=***&user_pwd=***&PASSWD=***"),
    # Only query parameters: ordinary words and settings that merely contain such a name stay.
    ("token=abc api_key: 12 password=x the keyboard keys", "token=abc api_key: 12 password=x the keyboard keys"),
    ("https://h/x?region=eu&signed=1&page=2", "https://h/x?region=eu&signed=1&page=2"),
])
def test_redact_masks_passwords_in_urls(text, shown):
    from dask_pipeline.config import redact

    assert redact(text) == shown


def test_a_long_password_with_spaces_is_masked_in_the_dumped_config():
    """YAML wraps a long plain value at a space past column 80; the mask only sees whole lines."""
    from dask_pipeline.config import dump_config

    storage = ("mysql://optuna_service_account:correct horse battery staple and then some more words"
               "@db.internal/optuna")
    text = dump_config(load_config(overrides={"tune.storage": storage}))
    assert "horse" not in text and "words" not in text
    assert "  storage: mysql://optuna_service_account:***@db.internal/optuna\n" in text


def test_a_storage_password_never_reaches_the_run_folder(tmp_path, small_store):
    """config.yaml and run.json of a run whose config holds a database URL with a password."""
    from dask_pipeline.runner import run

    config = tmp_path / "secret.yaml"
    config.write_text(
        f"graph: datacheck\ndata: {{root: {small_store}}}\n"
        "tune: {storage: 'postgresql://optuna:hunter2@db.internal:5432/studies'}\n"
        f"cluster: {{n_workers: 1, dashboard: false}}\noutput: {{dir: {tmp_path / 'results'}}}\n"
    )
    cfg = load_config(config)
    assert cfg.tune.storage.endswith("hunter2@db.internal:5432/studies")  # the run itself has it
    result = run(cfg, echo=lambda *a, **k: None)
    written = {p.name: p.read_bytes() for p in result.run_dir.iterdir() if p.is_file()}
    assert {"config.yaml", "run.json"} <= written.keys()
    assert not [name for name, data in written.items() if b"hunter2" in data]
    assert b"postgresql://optuna:***@db.internal" in written["config.yaml"]


@pytest.mark.parametrize("name", ["/tmp/v", "../../X", "..", ".", ".hidden", "a/b", "a\\b", " ", "x" * 201,
                                  "tab\there"])
def test_run_name_is_a_plain_folder_name(tmp_path, name):
    with pytest.raises(ConfigError, match=r"'output.run_name': .* is not a plain folder name"):
        load_config(overrides={"output.run_name": name, "output.dir": str(tmp_path)})
    assert load_config(overrides={"output.run_name": "2024-q1_v2.final"}).run_dir.name == "2024-q1_v2.final"


def test_negative_seeds_fail_at_load():
    for key in ("seed", "tune.seed", "data.synthetic.seed"):
        with pytest.raises(ConfigError, match=rf"'{key}': Input should be greater than or equal to 0"):
            load_config(overrides={key: -1})


def test_a_cache_dir_that_is_a_file_fails_at_load(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    for where in ("cache", "cache/features"):
        with pytest.raises(ConfigError, match=rf"'features.cache_dir': {tmp_path / 'cache'} is a file, not a folder"):
            load_config(overrides={"features.cache_dir": str(tmp_path / where)})
    load_config(overrides={"features.cache_dir": str(tmp_path / "cache"), "features.cache": False})


def test_a_scheduler_address_never_carries_a_password():
    with pytest.raises(ConfigError, match=r"tcp://alice:\*\*\*@db:8786' holds a user or password") as err:
        from dask_pipeline.redaction import redact

        try:
            load_config(overrides={"cluster.kind": "address", "cluster.address": "tcp://alice:pa ss@db:8786"})
        except ConfigError as exc:
            raise ConfigError(redact(str(exc))) from None
    assert "pa ss" not in str(err.value)


ALIAS_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))


@pytest.mark.parametrize("text, problem", [
    ("l0: &l0 [x]\n" + ALIAS_BOMB + "data: {symbols: *l9}\n", "line 6: holds more than 100,000 values once its "
                                                               "aliases are expanded (an alias bomb?); refused"),
    ("a: &a [1, *a]\n", "line 1: an alias refers to a value that contains it"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "line 1: nested more than 64 levels deep"),
])
def test_alias_bombs_and_deep_nesting_are_refused_fast(tmp_path, text, problem):
    import time

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(write(tmp_path, text))
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("text, problem", [
    ("graph: datacheck\ndata: {root: x, root: y}\n", "line 2: not valid YAML (key 'root' appears twice, first on line 2)"),
    ("graph: datacheck\ndata:\n  root: x\n  root: y\n", "line 4: not valid YAML (key 'root' appears twice, first on line 3)"),
    ("folds: {train: 252}\nfolds: {test: 63}\n", "line 2: not valid YAML (key 'folds' appears twice, first on line 1)"),
])
def test_a_key_given_twice_is_refused_even_on_one_line(tmp_path, text, problem):
    """A flow mapping repeats a key on the line it began: PyYAML would keep the last ``root``."""
    with pytest.raises(ConfigError, match=r"c\.yaml: " + re.escape(problem) + "$"):
        load_config(write(tmp_path, text))


def test_a_huge_config_is_refused_before_parsing(tmp_path):
    import time

    path = write(tmp_path, "data:\n  symbols: [" + ", ".join(f"S{i:07d}" for i in range(1_200_000)) + "]\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"c.yaml: [\d,]+ bytes, more than a config may hold \(1,048,576\)"):
        load_config(path)
    assert time.perf_counter() - t0 < 1
    many = [f"S{i:06d}" for i in range(60_000)]  # under the limit: checked in linear time
    t0 = time.perf_counter()
    assert len(load_config(overrides={"data.symbols": many}).data.symbols) == 60_000
    assert time.perf_counter() - t0 < 10
