"""The paper configs load with the paper's values; bad keys and types fail naming the key."""
import os

import pytest

from vreloc_tf.config import Config, ConfigError, HeadGroup, load_config, save_config


def test_paper_full_has_the_papers_settings():
    cfg = load_config("paper_full")
    assert cfg.supervision == "full"
    assert cfg.data.feature_dim == 500
    assert cfg.model.hidden_dim == 128 and cfg.model.lstm_dim == 128
    assert cfg.model.self_attention_heads == 2 and cfg.model.self_attention_key_dim == 32
    assert [(g.heads, g.kernel_size, g.dilation, g.filters) for g in cfg.model.heads] == [
        (8, 1, 1, 32), (8, 3, 1, 32), (8, 3, 2, 32), (8, 3, 3, 32), (8, 3, 4, 32)]
    assert sum(g.heads for g in cfg.model.heads) == 40
    assert (cfg.model.dropout_before_bilstm, cfg.model.dropout_after_bilstm) == (0.4, 0.2)
    assert cfg.train.learning_rate == 1e-3 and cfg.train.lr_decay_factor == 0.1 and cfg.train.lr_decay_steps == 200
    assert cfg.train.batch_size == 128
    assert cfg.loss.alpha == 0.3 and cfg.loss.boundary_weight == 10.0
    assert cfg.loss.coattention_mask_after_steps == 100
    assert cfg.decode.full_max_length == 64 and cfg.decode.weak_max_length is None
    assert cfg.decode_max_length == 64


def test_paper_weak_differs_only_in_supervision_and_its_objective():
    full, weak = load_config("paper_full"), load_config("paper_weak")
    assert weak.supervision == "weak" and weak.loss.weak_variant == "paper"
    assert weak.decode_rule == "weak" and weak.decode_max_length is None
    assert weak.selection_rule == "label_free" and full.selection_rule == "val_map"
    weak.supervision, weak.loss.weak_variant = "full", "ours"
    assert weak.to_dict() == full.to_dict()


def test_weak_ours_decodes_with_eq20_and_paper_models_have_no_similarity_features():
    ours = load_config("paper_full", ["supervision=weak"])
    assert ours.loss.weak_variant == "ours" and ours.decode_rule == "full" and ours.decode_max_length == 64
    assert not Config().model.similarity_features and load_config("tiny").model.similarity_features


def test_recommended_configs_are_the_paper_size_with_our_extensions():
    # full.yaml / weak.yaml (issue #26 item 7): the paper's size and schedule, our similarity
    # features, and (weak) our objective; nothing else differs from the exact reproduction.
    paper, full, weak = load_config("paper_full"), load_config("full"), load_config("weak")
    assert full.model.similarity_features and weak.model.similarity_features
    assert full.supervision == "full" and weak.supervision == "weak" and weak.loss.weak_variant == "ours"
    assert weak.selection_rule == "label_free" and full.selection_rule == "val_map"
    paper.model.similarity_features = True
    assert full.to_dict() == paper.to_dict()
    # weak trains with negative pairs (docs/QUALITY_HISTORY.md, "Negative pairs"); full does not
    assert weak.data.negative_pair_rate == 0.25 and full.data.negative_pair_rate == paper.data.negative_pair_rate == 0
    weak.supervision, weak.data.negative_pair_rate = "full", 0.0
    assert weak.to_dict() == full.to_dict()
    for name in ("paper_full", "paper_weak"):  # each says at its top that it is the exact reproduction
        with open(os.path.join(os.path.dirname(__file__), "..", "configs", f"{name}.yaml")) as fh:
            assert fh.readline().startswith("# EXACT REPRODUCTION")


def test_paper_files_equal_the_dataclass_defaults():
    # The YAML files and the defaults must not drift apart.
    assert load_config("paper_full").to_dict() == Config().to_dict()


def test_tiny_is_the_same_family_but_small():
    cfg = load_config("tiny")
    assert [(g.kernel_size, g.dilation) for g in cfg.model.heads] == [(1, 1), (3, 1), (3, 2), (3, 3), (3, 4)]
    assert cfg.model.hidden_dim < 128 and cfg.train.steps <= 1000


def test_set_overrides_and_weak_twin():
    cfg = load_config("paper_full", ["supervision=weak", "train.steps=7", "loss.alpha=0.5", "decode.full_max_length=null"])
    assert cfg.supervision == "weak" and cfg.train.steps == 7 and cfg.loss.alpha == 0.5
    assert cfg.decode.full_max_length is None
    # int given for a float field is accepted as float
    assert load_config("tiny", ["train.learning_rate=1"]).train.learning_rate == 1.0
    # whole lists can be set as YAML
    cfg = load_config("tiny", ["model.heads=[{heads: 3, kernel_size: 5, dilation: 2, filters: 4}]"])
    assert cfg.model.heads == [HeadGroup(3, 5, 2, 4)]


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hiden_dim: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "model.hiden_dim" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key_and_type(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    msg = str(err.value)
    assert "train.batch_size" in msg and "int" in msg and str(path) in msg
    path.write_text("model:\n  heads:\n    - {heads: 8, kernel_size: 3.5}\n")
    with pytest.raises(ConfigError, match=r"model\.heads\[0\]\.kernel_size"):
        load_config(str(path))
    path.write_text("model:\n  multiscale: 1\n")
    with pytest.raises(ConfigError, match="model.multiscale.*bool"):
        load_config(str(path))


def test_bad_overrides_name_the_key():
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config("tiny", ["train.stepz=3"])
    with pytest.raises(ConfigError, match="train.steps.*int"):
        load_config("tiny", ["train.steps=many"])
    with pytest.raises(ConfigError, match="supervision"):
        load_config("tiny", ["supervision=semi"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", ["supervision"])


def test_saved_config_loads_back_equal(tmp_path):
    cfg = load_config("tiny", ["supervision=weak", "seed=3"])
    save_config(cfg, str(tmp_path / "c.yaml"))
    again = load_config(str(tmp_path / "c.yaml"))
    assert again.to_dict() == cfg.to_dict() and again.digest() == cfg.digest()
    assert again.digest() != load_config("tiny").digest()


def test_missing_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="not found"):
        load_config(os.path.join("nowhere", "x.yaml"))


def test_feature_dim_may_be_left_to_the_data_and_unused_keys_are_gone():
    assert load_config("tiny").data.feature_dim == 32
    assert load_config("tiny", ["data.feature_dim=null"]).data.feature_dim is None
    for key in ("frames_per_feature", "max_query", "shuffle_buffer"):  # the data decides / never read
        with pytest.raises(ConfigError, match=f"unknown key 'data.{key}'"):
            load_config("tiny", [f"data.{key}=1"])
    assert load_config("paper_full").data.max_window == 300  # locate's window


def test_the_decode_limit_of_each_rule_comes_from_one_function():
    cfg = load_config("paper_full", ["decode.weak_max_length=100"])
    assert (cfg.decode.max_length("full"), cfg.decode.max_length("weak")) == (64, 100)
    assert cfg.decode_max_length == cfg.decode.max_length(cfg.supervision) == 64
    with pytest.raises(ConfigError, match="decode mode"):
        cfg.decode.max_length("semi")


def test_a_config_error_is_an_input_error():
    from vreloc_tf.errors import InputError

    with pytest.raises(InputError, match="model.hidden_dim.*int"):
        load_config("tiny", ["model.hidden_dim=abc"])


# -- suggestions and resolution from any folder (issue #24) ----------------------------------------------

def test_unknown_keys_name_the_closest_key():
    for override, hint in [("train.step=5", "'train.step' (did you mean train.steps?)"),
                           ("trian.steps=5", "'trian' (did you mean train?)"),
                           ("model.cgbm.memdim=3", "'model.cgbm.memdim' (did you mean model.cgbm.memory_dim?)")]:
        with pytest.raises(ConfigError) as err:
            load_config("tiny", [override])
        assert str(err.value) == f"--set {override!r}: unknown key {hint}"
    with pytest.raises(ConfigError, match=r"unknown key 'train\.zzz' \(known keys of train: batch_size, .*steps"):
        load_config("tiny", ["train.zzz=1"])


def test_unknown_key_in_a_file_names_the_closest_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  heads:\n    - {heads: 8, kernal_size: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value) == (f"{path}: unknown key 'model.heads[0].kernal_size' "
                              f"(did you mean model.heads[0].kernel_size?)")


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from vreloc_tf.config import CONFIG_DIR, resolve_config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    assert shipped_configs() == ["cgbm", "full", "paper_full", "paper_weak", "tiny", "weak"]
    shipped = os.path.join(CONFIG_DIR, "tiny.yaml")
    for name in ("tiny", "tiny.yaml", "configs/tiny.yaml", "./configs/tiny.yaml"):
        assert resolve_config_path(name) == shipped, name
    assert load_config("configs/tiny.yaml").to_dict() == load_config("tiny").to_dict()
    # a file that exists where it is named always wins over the shipped one
    os.makedirs("configs")
    with open(os.path.join("configs", "tiny.yaml"), "w") as fh:
        fh.write("train:\n  steps: 7\n")
    assert resolve_config_path("configs/tiny.yaml") == "configs/tiny.yaml"
    assert load_config("configs/tiny.yaml").train.steps == 7 and load_config("tiny").train.steps != 7


def test_an_unknown_config_name_names_the_closest_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("tni", "configs/tni.yaml", "paper_ful"):
        with pytest.raises(ConfigError) as err:
            load_config(name)
        want = "tiny" if "tni" in name else "paper_full"
        assert str(err.value) == (f"config file not found: {name!r} (did you mean {want}? "
                                  f"shipped configs: cgbm, full, paper_full, paper_weak, tiny, weak)")
    with pytest.raises(ConfigError, match=r"not found: 'elsewhere/x\.yaml' \(shipped configs: cgbm"):
        load_config("elsewhere/x.yaml")
