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
