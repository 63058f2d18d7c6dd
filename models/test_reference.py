#!/usr/bin/env python3
"""Properties of the reference scoring that hold by construction, checked independently."""

import math
import unittest

import numpy as np

import reference


class ReferenceProperties(unittest.TestCase):
    def test_resize_to_same_size_is_identity(self):
        image = np.random.default_rng(0).uniform(0, 255, (7, 9, 3))
        np.testing.assert_allclose(reference.resize(image, 7, 9), image, atol=1e-12)

    def test_resize_keeps_a_constant_image_constant(self):
        image = np.full((31, 45, 3), 77.0)
        np.testing.assert_allclose(reference.resize(image, 8, 13), 77.0, atol=1e-9)
        np.testing.assert_allclose(reference.resize(image, 50, 70), 77.0, atol=1e-9)

    def test_halving_averages_pixel_pairs_with_neighbours(self):
        # Reducing by 2: tent of half-width 2 centred between pixels 2o and 2o+1 -> weights 1,3,3,1.
        taps = reference.resize_taps(8, 4)
        lo, w = taps[1]
        self.assertEqual(lo, 1)
        np.testing.assert_allclose(w, np.array([1, 3, 3, 1]) / 8)

    def test_upsample_identity_and_constant(self):
        grid = np.random.default_rng(1).uniform(size=(5, 6))
        np.testing.assert_allclose(reference.upsample(grid, 5, 6), grid)
        np.testing.assert_allclose(reference.upsample(np.full((3, 4), 0.3), 30, 17), 0.3)

    def test_upsample_doubling_interpolates_quarter_steps(self):
        up = reference.upsample(np.array([[0.0, 1.0]]), 1, 4)
        np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])

    def test_gaussian_kernel_sums_to_one_and_smooth_keeps_constants(self):
        self.assertAlmostEqual(reference.gaussian_kernel(2.3).sum(), 1.0)
        self.assertEqual(len(reference.gaussian_kernel(1.2)), 2 * math.ceil(3.6) + 1)
        np.testing.assert_allclose(reference.smooth(np.full((9, 11), 0.4), 1.7), 0.4)

    def test_smooth_preserves_mass_away_from_edges(self):
        impulse = np.zeros((41, 41))
        impulse[20, 20] = 1.0
        self.assertAlmostEqual(reference.smooth(impulse, 2.0).sum(), 1.0)

    def test_layer_probability_is_sigmoid_of_logit_difference(self):
        z = np.random.default_rng(2).normal(0, 5, (3, 2, 4, 4))
        expected = 1 / (1 + np.exp(z[:, 0] - z[:, 1]))
        np.testing.assert_allclose(reference.layer_probabilities(z), expected)

    def test_refine_keeps_peaks_and_flat_maps_and_lowers_shoulders(self):
        coarse = np.array([[0.1, 0.4, 0.8, 0.4, 0.1]])
        refined = reference.refine(coarse, 1, 1.0)
        np.testing.assert_allclose(refined, [[0.1 * 0.1 / 0.4, 0.4 * 0.4 / 0.8, 0.8, 0.4 * 0.4 / 0.8, 0.1 * 0.1 / 0.4]])
        np.testing.assert_allclose(reference.refine(np.full((3, 4), 0.3), 2, 1.0), 0.3)
        np.testing.assert_allclose(reference.refine(np.zeros((2, 2)), 1, 1.0), 0.0)

    def test_refine_with_zero_sharpness_is_identity(self):
        coarse = np.random.default_rng(4).uniform(size=(5, 4))
        np.testing.assert_allclose(reference.refine(coarse, 2, 0.0), coarse)

    def test_refine_window_is_square_and_clipped(self):
        coarse = np.zeros((4, 4))
        coarse[0, 0], coarse[2, 2], coarse[3, 3] = 0.5, 1.0, 0.5
        refined = reference.refine(coarse, 1, 1.0)
        self.assertAlmostEqual(refined[0, 0], 0.5)  # the 1.0 at (2,2) is outside its window
        self.assertAlmostEqual(refined[3, 3], 0.25)  # (2,2) is a diagonal neighbour

    def test_image_score_top_k_and_logit_blend(self):
        m = np.arange(100, dtype=float).reshape(10, 10) / 100
        self.assertAlmostEqual(reference.image_score(m, 0.03), (0.99 + 0.98 + 0.97) / 3)
        self.assertAlmostEqual(reference.image_score(m, 1e-9), 0.99)
        blended = reference.image_score(m, 0.01, np.array([[0.0, 0.0]]), 0.5)
        self.assertAlmostEqual(blended, 0.5 * 0.99 + 0.5 * 0.5)

    def test_verdict(self):
        self.assertEqual(reference.verdict(0.5, 0.5), "fail")
        self.assertEqual(reference.verdict(0.49, 0.5), "pass")
        self.assertEqual(reference.verdict(float("nan"), 0.5), "error")


if __name__ == "__main__":
    unittest.main()


class MemoryAndMask(unittest.TestCase):
    def unit(self, shape, seed):
        v = np.random.default_rng(seed).normal(size=shape)
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def test_a_patch_remembered_exactly_has_distance_zero(self):
        features = self.unit((2, 5, 4), 0)
        bank = features.transpose(1, 0, 2).reshape(5, 8)
        np.testing.assert_allclose(reference.memory_distances(features, bank), 0.0, atol=1e-12)

    def test_leaving_an_image_out_forgets_its_patches(self):
        features = self.unit((1, 3, 4), 1)
        other = self.unit((3, 4), 2)
        bank = np.concatenate([features[0], other])
        sources = np.array([0, 0, 0, 1, 1, 1])
        with_own = reference.memory_distances(features, bank, sources)
        without_own = reference.memory_distances(features, bank, sources, exclude=0)
        np.testing.assert_allclose(with_own, 0.0, atol=1e-12)
        expected = 1.0 - (features[0] @ other.T).max(axis=1)
        np.testing.assert_allclose(without_own, expected)

    def test_the_mask_scores_only_what_it_inspects(self):
        full = np.zeros((10, 10))
        full[:, :5] = 1.0  # anomalous left half
        inspected = np.zeros((10, 10), bool)
        inspected[:, 5:] = True
        self.assertEqual(reference.image_score(full, 0.5, inspected=inspected), 0.0)
        self.assertEqual(reference.image_score(full, 0.5), 1.0)
        # top_k counts inspected pixels only: 10 % of 50 is 5 values.
        full[0, 5:] = [0.5, 0.5, 0.5, 0.5, 0.5]
        self.assertAlmostEqual(reference.image_score(full, 0.1, inspected=inspected), 0.5)
