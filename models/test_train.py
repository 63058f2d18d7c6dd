"""Tests of the CLIP-ADA training and export code on a tiny open_clip configuration with
random initial weights, on the CPU (models/test.sh runs them)."""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import onnx
import open_clip
import torch
from PIL import Image
from torch.nn import functional as F

import clipada_torch
import export
import feature_cache
import reference
import synthesis
import train
from common import contract_of

torch.set_num_threads(1)  # the tests' models are tiny; leave the other cores alone

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
GOOD = HERE / "samples" / "part" / "train" / "good"
# Distinct file names: maps of file arguments are written under their file name.
TEST_IMAGES = [
    HERE / "samples" / "part" / "test" / name for name in ("good/002.png", "scratch/000.png", "chip/001.png")
]
CLIPADA = pathlib.Path(os.environ.get("CLIPADA_BIN", ROOT / "target" / "debug" / "clipada"))
TINY = clipada_torch.ModelConfig(clip="tiny", image_size=64, taps=(2, 3), prompt_tokens=4, seed=3)


def tiny_model(config=TINY):
    return clipada_torch.ClipAda(config, clipada_torch.load_clip(config))


def quiet(_):
    pass


def assert_same_trained(test, a, b, atol):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if not name.startswith("clip."):
            test.assertLessEqual((p - q).abs().max().item(), atol, name)


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


class Prompts(unittest.TestCase):
    def test_the_prompts_give_clips_own_text_embeddings_when_the_context_is_the_placeholder_word(self):
        """The learner encodes only up to the longest prompt's end token; open_clip's encode_text
        encodes all 77 positions."""
        model = tiny_model()
        placeholder = open_clip.tokenize(["X"])[0, 1]
        with torch.no_grad():
            model.prompts.context.copy_(model.clip.token_embedding.weight[placeholder].expand_as(model.prompts.context))
            expected = []
            for state in ("normal", "abnormal"):
                prompts = [
                    f"{' '.join(['X'] * TINY.prompt_tokens)} {template.format(word)}"
                    for word in clipada_torch.STATE_WORDS[state]
                    for template in clipada_torch.TEMPLATES
                ]
                embeddings = F.normalize(model.clip.encode_text(open_clip.tokenize(prompts)), dim=-1)
                expected.append(F.normalize(embeddings.mean(dim=0), dim=-1))
            self.assertLess(model.prompts.tokens.shape[-1], 77)
            torch.testing.assert_close(model.text_embeddings(), torch.stack(expected), rtol=0, atol=1e-6)


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


class CachedTraining(unittest.TestCase):
    def test_cached_features_train_the_same_adapters_and_prompts_as_the_frozen_tower_each_step(self):
        # 12 samples, global batch 4: three epochs, so cached samples are read again.
        runs = []
        for cached in (False, True):
            model = tiny_model()
            with tempfile.TemporaryDirectory() as cache:
                losses = train.train(
                    model,
                    train.find_images(images=GOOD),
                    steps=9,
                    batch=4,
                    lr=1e-2,
                    seed=0,
                    log=quiet,
                    samples=12,
                    cache_dir=cache if cached else None,
                )
            runs.append((model, losses))
        (uncached, losses), (cached, cached_losses) = runs
        np.testing.assert_allclose(cached_losses, losses, rtol=0, atol=1e-5)
        assert_same_trained(self, cached, uncached, atol=1e-5)
        self.assertTrue(
            any(not torch.equal(p, q) for p, q in zip(uncached.trainable(), tiny_model().trainable(), strict=True))
        )

    def test_the_cache_is_reused_while_its_key_holds_and_rebuilt_when_it_changes(self):
        paths = train.find_images(images=GOOD)
        model = tiny_model()
        with tempfile.TemporaryDirectory() as cache:

            def prepare(samples, model=model, precision="fp32", budget_gb=1.0):
                return feature_cache.prepare(model, samples, cache, budget_gb, precision, 4, "cpu", log=quiet)

            samples = train.SampleSet(paths, 64, 6, seed=1)
            self.assertTrue(prepare(samples).built)
            cached = prepare(samples)
            self.assertFalse(cached.built)
            frozen, masks = cached.batch([5, 0], "cpu")
            images, expected_masks = samples.batch([5, 0])
            with torch.no_grad():
                expected = model.frozen_features(images)
            for key in expected:
                torch.testing.assert_close(frozen[key], expected[key], rtol=0, atol=1e-6)
            torch.testing.assert_close(masks, expected_masks, rtol=0, atol=0)
            self.assertTrue(prepare(train.SampleSet(paths, 64, 6, seed=2)).built)
            self.assertTrue(prepare(train.SampleSet(paths, 64, 7, seed=2)).built)
            self.assertTrue(prepare(train.SampleSet(paths[1:], 64, 7, seed=2)).built)
            self.assertTrue(prepare(train.SampleSet(paths[1:], 64, 7, seed=2), precision="bf16").built)
            other_weights = tiny_model(dataclasses.replace(TINY, seed=4))
            self.assertTrue(prepare(train.SampleSet(paths[1:], 64, 7, seed=2), model=other_weights).built)
            other_taps = tiny_model(dataclasses.replace(TINY, taps=(3,)))
            self.assertTrue(prepare(train.SampleSet(paths[1:], 64, 7, seed=2), model=other_taps).built)
            self.assertFalse(prepare(train.SampleSet(paths[1:], 64, 7, seed=2), model=other_taps).built)
            size = 7 * feature_cache.bytes_per_sample(other_taps)
            over = train.SampleSet(paths, 64, 7, seed=3)
            self.assertIsNone(prepare(over, model=other_taps, budget_gb=(size - 1) / 1e9))
            self.assertTrue(prepare(over, model=other_taps, budget_gb=size / 1e9).built)


class CacheFolder(unittest.TestCase):
    """The cache folder holds only what the cache wrote: what it did not write is never changed,
    and a damaged cache is rebuilt, never read."""

    def prepare(self, cache, samples=None, model=None):
        samples = samples or train.SampleSet(train.find_images(images=GOOD), 64, 6, seed=1)
        return feature_cache.prepare(model or self.model, samples, cache, 1.0, "fp32", 4, "cpu", log=quiet)

    def setUp(self):
        self.model = tiny_model()

    def test_a_folder_holding_files_it_did_not_write_is_refused_and_left_as_it_was(self):
        with tempfile.TemporaryDirectory() as folder:
            folder = pathlib.Path(folder)
            (folder / "user.npy").write_bytes(b"precious")
            (folder / "notes").mkdir()
            with self.assertRaises(SystemExit) as refused:
                self.prepare(folder)
            self.assertIn(str(folder), str(refused.exception))
            self.assertEqual(sorted(p.name for p in folder.iterdir()), ["notes", "user.npy"])
            self.assertEqual((folder / "user.npy").read_bytes(), b"precious")

    def test_a_symbolic_link_in_the_folder_is_refused_and_its_target_untouched(self):
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as elsewhere:
            folder, target = pathlib.Path(folder), pathlib.Path(elsewhere) / "user.npy"
            self.assertTrue(self.prepare(folder).built)
            target.write_bytes(b"precious")
            for name in ("patch-0.npy", "manifest.json.partial"):
                (folder / name).unlink(missing_ok=True)
                (folder / name).symlink_to(target)
                with self.subTest(name), self.assertRaises(SystemExit) as refused:
                    self.prepare(folder, train.SampleSet(train.find_images(images=GOOD), 64, 6, seed=9))
                self.assertIn(name, str(refused.exception))
                self.assertEqual(target.read_bytes(), b"precious")
                (folder / name).unlink()

    def test_a_cache_dir_that_is_a_file_is_refused(self):
        with tempfile.TemporaryDirectory() as folder:
            path = pathlib.Path(folder) / "cache"
            path.write_text("not a folder")
            with self.assertRaises(SystemExit) as refused:
                self.prepare(path)
            self.assertIn(str(path), str(refused.exception))
            self.assertEqual(path.read_text(), "not a folder")

    def test_damaged_shards_and_manifests_are_rebuilt(self):
        def truncate(folder):
            with open(folder / "patch-0.npy", "r+b") as f:
                f.truncate(2000)

        def overwrite(folder):  # same size, new bytes (and modification time)
            path = folder / "image-0.npy"
            data = bytearray(path.read_bytes())
            data[-8:] = b"\xff" * 8
            path.write_bytes(bytes(data))
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

        def remove(folder):
            (folder / "mask-0.npy").unlink()

        def garble_manifest(folder):
            (folder / "manifest.json").write_text('{"ke')

        def more_rows(folder):
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["shards"] = [[0, 9]]
            (folder / "manifest.json").write_text(json.dumps(manifest))

        def wrong_shape(folder):
            np.save(folder / "patch-0.npy", np.zeros((6, 1, 4, 64), np.float32))
            manifest = json.loads((folder / "manifest.json").read_text())
            stat = (folder / "patch-0.npy").stat()
            manifest["files"]["patch-0.npy"] = [stat.st_size, stat.st_mtime_ns]
            (folder / "manifest.json").write_text(json.dumps(manifest))

        samples = train.SampleSet(train.find_images(images=GOOD), 64, 6, seed=1)
        images, expected_masks = samples.batch(range(6))
        with torch.no_grad():
            expected = self.model.frozen_features(images)
        for damage in (truncate, overwrite, remove, garble_manifest, more_rows, wrong_shape):
            with self.subTest(damage.__name__), tempfile.TemporaryDirectory() as folder:
                folder = pathlib.Path(folder)
                self.assertTrue(self.prepare(folder, samples).built)
                self.assertFalse(self.prepare(folder, samples).built)
                damage(folder)
                self.assertTrue(self.prepare(folder, samples).built)
                frozen, masks = self.prepare(folder, samples).batch(list(range(6)), "cpu")
                for key in expected:
                    torch.testing.assert_close(frozen[key], expected[key], rtol=0, atol=1e-6)
                torch.testing.assert_close(masks, expected_masks, rtol=0, atol=0)


class Checkpoints(unittest.TestCase):
    def test_resuming_after_some_steps_continues_as_the_uninterrupted_run(self):
        paths = train.find_images(images=GOOD)
        options = dict(batch=2, lr=1e-2, seed=0, log=quiet, samples=6)
        with tempfile.TemporaryDirectory() as whole, tempfile.TemporaryDirectory() as interrupted:
            uninterrupted = tiny_model()
            losses = train.train(uninterrupted, paths, steps=5, out=whole, **options)
            train.train(tiny_model(), paths, steps=2, out=interrupted, **options)
            resumed = tiny_model()
            resumed_losses = train.train(resumed, paths, steps=5, out=interrupted, resume=True, **options)
            with self.assertRaises(ValueError):
                train.train(tiny_model(), paths, steps=6, out=interrupted, resume=True, **{**options, "seed": 1})
        self.assertEqual(len(resumed_losses), 5)
        np.testing.assert_allclose(resumed_losses, losses, rtol=0, atol=1e-6)
        assert_same_trained(self, resumed, uninterrupted, atol=1e-6)

    def test_a_resumed_run_continues_with_the_lr_of_its_command_line_and_says_so(self):
        paths = train.find_images(images=GOOD)
        options = dict(batch=2, seed=0, samples=6)
        with tempfile.TemporaryDirectory() as out:
            checkpoint = pathlib.Path(out) / "checkpoint.pt"
            train.train(tiny_model(), paths, steps=2, lr=1e-2, out=out, log=quiet, **options)
            said = []
            train.train(tiny_model(), paths, steps=3, lr=1e-3, out=out, resume=True, log=said.append, **options)
            groups = torch.load(checkpoint, weights_only=True)["optimiser"]["param_groups"]
            self.assertEqual([group["lr"] for group in groups], [1e-3] * len(groups))
            self.assertTrue(any("--lr 0.001" in line and "0.01" in line for line in said), said)
            said.clear()
            train.train(tiny_model(), paths, steps=4, lr=1e-3, out=out, resume=True, log=said.append, **options)
            self.assertFalse(any("--lr" in line for line in said), said)

    def test_mixed_precision_keeps_float32_checkpoints_that_export(self):
        paths = train.find_images(images=GOOD)
        for precision in ("bf16", "fp16"):
            with self.subTest(precision), tempfile.TemporaryDirectory() as out:
                model = tiny_model()
                losses = train.train(
                    model,
                    paths,
                    steps=2,
                    batch=2,
                    lr=1e-2,
                    seed=0,
                    out=out,
                    log=quiet,
                    samples=4,
                    precision=precision,
                )
                self.assertTrue(np.isfinite(losses).all())
                state = torch.load(pathlib.Path(out) / "checkpoint.pt", weights_only=True)
                self.assertEqual({t.dtype for t in state["trained"].values()}, {torch.float32})
                restored = clipada_torch.from_checkpoint(pathlib.Path(out) / "checkpoint.pt")
                self.assertLessEqual(export.export(restored, pathlib.Path(out) / "m.onnx"), export.TOLERANCE)


class Refusals(unittest.TestCase):
    """Settings a run cannot keep are refused with what is wrong, before any work."""

    def test_resuming_a_checkpoint_of_another_model_or_a_damaged_one_is_refused(self):
        paths = train.find_images(images=GOOD)
        options = dict(batch=2, lr=1e-2, seed=0, log=quiet, samples=4)
        with tempfile.TemporaryDirectory() as out:
            train.train(tiny_model(), paths, steps=1, out=out, **options)
            checkpoint = pathlib.Path(out) / "checkpoint.pt"
            for other in (dataclasses.replace(TINY, taps=(1, 2)), dataclasses.replace(TINY, image_size=32)):
                with self.subTest(other), self.assertRaises(ValueError) as refused:
                    train.train(tiny_model(other), paths, steps=2, out=out, resume=True, **options)
                self.assertIn(str(checkpoint), str(refused.exception))
            whole = checkpoint.read_bytes()
            for damaged in (whole[: len(whole) // 2], b"not a checkpoint"):
                checkpoint.write_bytes(damaged)
                with self.subTest(len(damaged)), self.assertRaises(ValueError) as refused:
                    train.train(tiny_model(), paths, steps=2, out=out, resume=True, **options)
                self.assertIn(str(checkpoint), str(refused.exception))

    def test_resuming_with_other_clip_weights_of_the_same_model_is_refused(self):
        """Another --weights file of the same CLIP model name (here: the tiny CLIP's weights
        changed in place, in the image tower or the text tower) has the same config."""
        paths = train.find_images(images=GOOD)
        options = dict(batch=2, lr=1e-2, seed=0, log=quiet, samples=4)
        with tempfile.TemporaryDirectory() as out:
            train.train(tiny_model(), paths, steps=1, out=out, **options)
            checkpoint = pathlib.Path(out) / "checkpoint.pt"
            before = checkpoint.read_bytes()
            for name in ("visual.proj", "text_projection"):
                other = tiny_model()
                with torch.no_grad():
                    other.clip.get_parameter(name).add_(1e-3)
                with self.subTest(name), self.assertRaises(train.Refused) as refused:
                    train.train(other, paths, steps=2, out=out, resume=True, **options)
                self.assertIn(str(checkpoint), str(refused.exception))
                self.assertIn("clip_sha256", str(refused.exception))
                self.assertEqual(checkpoint.read_bytes(), before)
            self.assertEqual(len(train.train(tiny_model(), paths, steps=2, out=out, resume=True, **options)), 2)

    def test_a_finished_run_resumed_trains_nothing_and_keeps_its_checkpoint(self):
        paths = train.find_images(images=GOOD)
        options = dict(batch=2, lr=1e-2, seed=0, samples=4)
        with tempfile.TemporaryDirectory() as out:
            train.train(tiny_model(), paths, steps=2, out=out, log=quiet, **options)
            before = (pathlib.Path(out) / "checkpoint.pt").read_bytes()
            said = []
            losses = train.train(tiny_model(), paths, steps=1, out=out, resume=True, log=said.append, **options)
            self.assertEqual(len(losses), 2)
            self.assertTrue(any("nothing to train" in line for line in said), said)
            self.assertEqual((pathlib.Path(out) / "checkpoint.pt").read_bytes(), before)

    def test_checkpoints_never_write_through_a_symbolic_link_in_out(self):
        paths = train.find_images(images=GOOD)
        with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as elsewhere:
            target = pathlib.Path(elsewhere) / "user.file"
            target.write_bytes(b"precious")
            for name in ("checkpoint.pt.partial", "losses.json"):
                (pathlib.Path(out) / name).symlink_to(target)
            train.train(tiny_model(), paths, steps=1, batch=2, lr=1e-2, seed=0, out=out, log=quiet, samples=2)
            self.assertEqual(target.read_bytes(), b"precious")
            self.assertEqual(len(clipada_torch.from_checkpoint(pathlib.Path(out) / "checkpoint.pt").adapters), 2)

    def test_bad_numbers_on_the_command_line_are_refused_by_name(self):
        base = ["--clip", "tiny", "--images", str(GOOD), "--out", "/nonexistent/out"]
        for option, value in (
            ("--samples", "0"),
            ("--batch", "0"),
            ("--steps", "0"),
            ("--steps", "-3"),
            ("--save-every", "-1"),
            ("--limit-images", "0"),
            ("--cache-budget-gb", "nan"),
        ):
            with self.subTest(option=option, value=value):
                errors = io.StringIO()
                with contextlib.redirect_stderr(errors), self.assertRaises(SystemExit) as refused:
                    train.parse_args([*base, option, value])
                self.assertEqual(refused.exception.code, 2)
                self.assertIn(option, errors.getvalue())
        self.assertEqual(train.parse_args(base).steps, 3000)


class Distributed(unittest.TestCase):
    def test_two_gloo_processes_train_as_one_process_with_their_global_batch_and_resume(self):
        """torchrun, 2 CPU processes of batch 2 (sharded cache built and read), 2 steps, then
        resumed to 3; against 3 uncached steps of one process with batch 4."""
        config = dataclasses.replace(TINY, seed=0)  # what train.py's command line builds
        arguments = [
            *("--clip", "tiny", "--image-size", "64", "--taps", "2", "3", "--prompt-tokens", "4"),
            *("--images", str(GOOD), "--samples", "8", "--batch", "2", "--lr", "1e-2", "--seed", "0"),
        ]
        torchrun = pathlib.Path(sys.executable).parent / "torchrun"
        with tempfile.TemporaryDirectory() as out:
            for steps, extra in ((2, []), (3, ["--resume"])):
                subprocess.run(
                    [
                        str(torchrun),
                        "--standalone",
                        "--nproc_per_node",
                        "2",
                        str(HERE / "train.py"),
                        *arguments,
                        "--steps",
                        str(steps),
                        "--out",
                        out,
                        *extra,
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
            self.assertEqual(len(list((pathlib.Path(out) / "cache").glob("patch-*.npy"))), 2)
            two = clipada_torch.from_checkpoint(pathlib.Path(out) / "checkpoint.pt")
            two_losses = json.loads((pathlib.Path(out) / "losses.json").read_text())
        one = tiny_model(config)
        one_losses = train.train(
            one, train.find_images(images=GOOD), steps=3, batch=4, lr=1e-2, seed=0, log=quiet, samples=8
        )
        np.testing.assert_allclose(two_losses, one_losses, rtol=0, atol=1e-5)
        assert_same_trained(self, two, one, atol=1e-5)


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


class Documentation(unittest.TestCase):
    def test_test_sh_and_the_readme_name_every_test_class_of_this_file(self):
        header = "".join(
            line for line in (HERE / "test.sh").read_text().splitlines(keepends=True) if line.startswith("#")
        )
        readme = (HERE / "README.md").read_text()
        section = readme[readme.index("### Tests") :]
        classes = [
            name
            for name, value in globals().items()
            if isinstance(value, type) and issubclass(value, unittest.TestCase) and value.__module__ == __name__
        ]
        for name in classes:
            with self.subTest(name):
                self.assertIn(f"{name}:", header)
                self.assertIn(f"`{name}`", section)


if __name__ == "__main__":
    unittest.main()
