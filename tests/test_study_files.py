"""Each study is defined in a module named after it, so a reader finds `noise-scale` in `noise_scale.py`."""

from batchlab.studies import REGISTRY, study_file


def test_every_study_lives_in_a_file_named_after_it():
    for name in REGISTRY:
        path = study_file(name)
        assert path.stem == name.replace("-", "_"), f"{name} is defined in {path}"
        assert path.parent.parent.name == "studies"  # studies/<family>/<study>.py
