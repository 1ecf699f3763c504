"""Config keys marked as without effect on results: one mark, used by cache keys and resume checks."""

import dataclasses

from thermocg.config import Config, NO_EFFECT, TrainConfig, affects_results, result_dict


def test_result_dict_leaves_out_exactly_the_marked_keys():
    train = TrainConfig()
    data = result_dict(train)
    marked = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata == NO_EFFECT}
    assert marked == {"name", "eval_batch_size", "device", "n_threads", "progress"}
    assert set(data) == {f.name for f in dataclasses.fields(TrainConfig)} - marked
    assert "train_states" not in result_dict(train, drop=("train_states",))


def test_keys_without_effect_do_not_change_the_result_dict_and_others_do():
    base = Config()
    threads = dataclasses.replace(base, train=dataclasses.replace(base.train, n_threads=7, progress=False),
                                  generate=dataclasses.replace(base.generate, platform="CPU", n_threads=1),
                                  study=dataclasses.replace(base.study, max_workers=4))
    assert result_dict(threads) == result_dict(base)
    changed = dataclasses.replace(base, train=dataclasses.replace(base.train, learning_rate=2e-3))
    assert result_dict(changed) != result_dict(base)
    assert not affects_results(TrainConfig, "n_threads")
    assert affects_results(TrainConfig, "learning_rate")


def _load(tmp_path, text):
    from thermocg.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    import pytest

    from thermocg.config import ConfigError

    with pytest.raises(ConfigError, match=r"config.yaml: the key 'simulate' is given twice .*lines 1 and 3"):
        _load(tmp_path, "simulate: {timestep_fs: 2}\nseed: 3\nsimulate: {timestep_fs: 4}\n")
    with pytest.raises(ConfigError, match="'timestep_fs' is given twice"):
        _load(tmp_path, "simulate:\n  timestep_fs: 2\n  timestep_fs: 4\n")


def test_non_finite_numbers_are_refused_where_the_key_is_read(tmp_path):
    import pytest

    from thermocg.config import ConfigError

    for text, key in (("train: {learning_rate: .nan}\n", "train.learning_rate"),
                      ("simulate: {timestep_fs: .inf}\n", "simulate.timestep_fs"),
                      ("pair: {cutoff_A: -.inf}\n", "pair.cutoff_A"),
                      ("states: [{temperature_K: .nan, density_g_cm3: 0.8}]\n", r"states\[0\].temperature_K")):
        with pytest.raises(ConfigError, match=key + ": expected a finite number"):
            _load(tmp_path, text)


def test_a_misspelt_top_level_key_is_matched_inside_the_sections(tmp_path):
    import pytest

    from thermocg.config import ConfigError

    with pytest.raises(ConfigError, match="tempertaure_K: unknown key; did you mean 'states.temperature_K'"):
        _load(tmp_path, "tempertaure_K: 300\n")
    with pytest.raises(ConfigError, match="traing: unknown key; did you mean 'train'"):
        _load(tmp_path, "traing: {}\n")
    with pytest.raises(ConfigError, match="train.cutof_A: unknown key; did you mean 'cutoff_A'"):
        _load(tmp_path, "train: {cutof_A: 3}\n")
