"""Loading a model never runs code that came with it: weights load from safetensors only, and a
model folder's own Python runs only when the experiment sets `model.trust_remote_code: true`.
Each test plants a payload that would leave a marker folder if it ever ran."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest

from orchestrator.config import ModelConfig
from orchestrator.data import DataError
from orchestrator.models.heads import TextClassifier, load_encoder, load_tokenizer
from orchestrator.models.sources import resolve_model


class Payload:
    """Unpickling this calls os.makedirs(marker): a stand-in for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.fixture
def booby_trapped(tiny_model, tmp_path):
    """The tiny model plus a pickled `pytorch_model.bin` that runs code when unpickled."""
    folder = tmp_path / "trapped"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "pickle-ran"
    trap = pickle.dumps({"weights": Payload(marker)})
    pickle.loads(trap)  # the payload is live: a plain unpickle runs it
    assert marker.is_dir()
    marker.rmdir()
    (folder / "pytorch_model.bin").write_bytes(trap)
    return folder, marker


def test_weights_load_from_safetensors_even_beside_a_pickle(booby_trapped):
    folder, marker = booby_trapped
    encoder = load_encoder(str(folder))
    assert sum(p.numel() for p in encoder.parameters()) > 0
    assert not marker.exists()


def test_a_model_with_only_pickled_weights_is_refused_unread(booby_trapped):
    folder, marker = booby_trapped
    for f in folder.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(DataError, match="holds no \\*.safetensors weights"):
        resolve_model(ModelConfig(name_or_path=str(folder)))
    with pytest.raises(OSError):  # transformers itself, asked for safetensors only, does not fall back
        load_encoder(str(folder))
    assert not marker.exists()


def test_a_saved_classifier_ignores_a_planted_pickle(tiny_model, tmp_path):
    saved = tmp_path / "clf"
    TextClassifier(load_encoder(str(tiny_model)), 2).save(saved, load_tokenizer(str(tiny_model)),
                                                          {"label_names": ["a", "b"], "max_length": 16})
    marker = tmp_path / "pickle-ran"
    for where in (saved, saved / "encoder"):
        (where / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    TextClassifier.load(saved)
    assert not marker.exists()


REMOTE_CODE = '''
import os
os.makedirs({marker!r}, exist_ok=True)  # runs when transformers imports this file
from transformers import BertModel


class EvilModel(BertModel):
    pass
'''


@pytest.mark.parametrize("trust", [False, True])
def test_model_code_in_the_folder_runs_only_when_the_config_trusts_it(tiny_model, tmp_path, trust):
    folder = tmp_path / "with-code"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "evil_model.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil_model.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    # A fresh process with its own modules cache: transformers copies trusted code there.
    script = textwrap.dedent(f"""
        from orchestrator.models.heads import load_encoder
        print(type(load_encoder({str(folder)!r}, trust_remote_code={trust})).__name__)
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == ("EvilModel" if trust else "BertModel")
    assert marker.exists() == trust
    assert ModelConfig().trust_remote_code is False  # off unless an experiment turns it on
