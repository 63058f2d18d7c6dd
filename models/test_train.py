"""Tests of the CLIP-ADA training and export code on a tiny open_clip configuration with
random initial weights, on the CPU (models/test.sh runs them)."""

import json
import os
import pathlib
import subprocess
import tempfile
import unittest

import numpy as np
import onnx
import torch
from PIL import Image

import clipada_torch
import export
import reference
import synthesis
import train
from common import contract_of

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
GOOD = HERE / "samples" / "part" / "train" / "good"
# Distinct file names: maps of file arguments are written under their file name.
TEST_IMAGES = [
    HERE / "samples" / "part" / "test" / name for name in ("good/002.png", "scratch/000.png", "chip/001.png")
]
CLIPADA = pathlib.Path(os.environ.get("CLIPADA_BIN", ROOT / "target" / "debug" / "clipada"))
TINY = clipada_torch.ModelConfig(clip="tiny", image_size=64, taps=(2, 3), prompt_tokens=4, seed=3)


def tiny_model():
    return clipada_torch.ClipAda(TINY, clipada_torch.load_clip(TINY))


class SyntheticAnomalies(unittest.TestCase):
    def test_anomalies_change_the_image_only_inside_their_mask(self):
        rng = np.random.default_rng(1)
        image = rng.random((64, 64, 3)).astype(np.float32)
        for make in (
            lambda: synthesis.perlin_anomaly(image, rng.random((64, 64, 3)), rng),
            lambda: synthesis.cut_paste(image, rng),
        ):
            for _ in range(10):
                altered, mask = make()
                self.assertGreater(mask.sum(), 0)
                outside = mask == 0
                np.testing.assert_array_equal(altered[outside], image[outside])
                self.assertGreater(np.abs(altered - image)[~outside].max(), 0.0)

    def test_normal_samples_keep_the_image_and_an_empty_mask(self):
        rng = np.random.default_rng(2)
        image = rng.random((32, 32, 3)).astype(np.float32)
        altered, mask = synthesis.synthesize(image, None, rng, anomaly_rate=0.0)
        np.testing.assert_array_equal(altered, image)
        self.assertEqual(mask.sum(), 0)


class Training(unittest.TestCase):
    def test_a_few_steps_lower_the_loss_and_train_only_adapters_and_prompts(self):
        model = tiny_model()
        frozen = {n: p.clone() for n, p in model.named_parameters() if n.startswith("clip.")}
        trained_before = [p.clone() for p in model.trainable()]
        losses = train.train(
            model, train.find_images(images=GOOD), steps=40, batch=8, lr=3e-3, seed=0, log=lambda _: None
        )
        first, last = np.mean(losses[:10]), np.mean(losses[-10:])
        self.assertLess(last, 0.95 * first, f"loss {first:.4f} -> {last:.4f}")
        for n, p in model.named_parameters():
            if n.startswith("clip."):
                torch.testing.assert_close(p, frozen[n], rtol=0, atol=0, msg=f"{n} changed")
        self.assertTrue(any(not torch.equal(a, b) for a, b in zip(trained_before, model.trainable(), strict=True)))

    def test_limit_images_keeps_that_many_per_category(self):
        with tempfile.TemporaryDirectory() as root:
            for category in ("a", "b"):
                folder = pathlib.Path(root) / category / "train" / "good"
                folder.mkdir(parents=True)
                for i in range(5):
                    Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
            self.assertEqual(len(train.find_images(data=root)), 10)
            self.assertEqual(len(train.find_images(data=root, limit=2)), 4)

    def test_a_checkpoint_restores_the_same_model(self):
        model = tiny_model()
        train.train(model, train.find_images(images=GOOD), steps=3, batch=2, lr=1e-2, seed=0, log=lambda _: None)
        with tempfile.TemporaryDirectory() as out:
            train.save(model, out, [])
            restored = clipada_torch.from_checkpoint(pathlib.Path(out) / "checkpoint.pt")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            a, b = model.eval()(x), restored(x)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


class Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.model = tiny_model()
        train.train(cls.model, train.find_images(images=GOOD), steps=5, batch=4, lr=1e-2, seed=0, log=lambda _: None)
        cls.path = pathlib.Path(cls.dir.name) / "tiny-trained.onnx"
        cls.worst = export.export(cls.model, cls.path)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def test_onnxruntime_matches_pytorch(self):
        self.assertLessEqual(self.worst, export.TOLERANCE)

    def test_the_contract_describes_the_graph(self):
        model = onnx.load(str(self.path))
        contract = contract_of(model)
        self.assertEqual(contract["layers"], [2, 3])
        self.assertEqual(contract["grid"], [8, 8])
        self.assertEqual(contract["input"]["size"], [64, 64])
        shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
        self.assertEqual(shapes, {"patch_logits": [2, 2, 8, 8], "image_logits": [1, 2], "patch_features": [2, 64, 32]})

    def test_the_runtime_gives_the_maps_of_pytorch_followed_by_the_reference_scoring(self):
        if not CLIPADA.exists():
            self.fail(f"{CLIPADA} missing: build it (cargo build) or set CLIPADA_BIN")
        spec = contract_of(self.path)
        graph = export.ExportGraph(self.model).eval()
        maps = pathlib.Path(self.dir.name) / "maps"
        for backend in ["tract"] + (["ort"] if os.environ.get("ORT_DYLIB_PATH") else []):
            result = subprocess.run(
                [
                    str(CLIPADA),
                    "infer",
                    "--json",
                    "--backend",
                    backend,
                    # The training venv's library: the tester's own, not root's.
                    "--allow-insecure-library",
                    "--model",
                    str(self.path),
                    "--maps-dir",
                    str(maps / backend),
                    *map(str, TEST_IMAGES),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            lines = [json.loads(line) for line in result.stdout.splitlines()]
            self.assertEqual(len(lines), len(TEST_IMAGES))
            for image, line in zip(TEST_IMAGES, lines, strict=True):
                rgb = np.asarray(Image.open(image).convert("RGB"))
                x = reference.preprocess(rgb, spec["input"])
                with torch.no_grad():
                    raw = [t.numpy().astype(np.float64) for t in graph(torch.from_numpy(x))]
                raw = dict(zip(["patch_logits", "image_logits", "patch_features"], raw, strict=True))
                expected_map, expected_score, _ = reference.score(raw, spec)
                runtime_map = np.load(line["map"])
                self.assertLessEqual(np.abs(runtime_map - expected_map).max(), 1e-4, f"{backend} {image}")
                self.assertLessEqual(abs(line["score"] - expected_score), 1e-4, f"{backend} {image}")


if __name__ == "__main__":
    unittest.main()
