//! Nearest-neighbour search of query patches against a memory bank, exact, with pruning.
//!
//! At load, the bank is grouped into blocks of 16 (`LANES`) mutually close patches (recursive
//! bisection along each group's widest direction) and packed block by block, feature-major
//! inside a block, so the kernel computes a `ROWS x LANES` tile of dot products with one
//! broadcast and one multiply-add per lane group and feature. Each block keeps its centroid
//! `c` and radius `r` (largest `|m - c|` of its members); by Cauchy–Schwarz no member of a
//! block beats `q·c + |q| r` for a query `q`. Per frame the search first takes the dot
//! products with every centroid (one small tile product), then scans each query group's
//! blocks, starting from the most promising, and skips a block when that bound is below the
//! best similarity already found for every query of the group. The result is the same as a
//! full scan; only the work saved depends on the data.
//!
//! Every buffer is allocated when the search is made, so a frame's search allocates nothing.
//! On x86-64 a copy of the scan compiled for AVX2 and FMA is chosen at run time where the CPU
//! has them; elsewhere (aarch64: NEON) the portable code vectorises as it is. The unit tests run
//! every variant the CPU has against a brute-force search (under qemu too, for aarch64).

use super::MemoryBank;

/// Memory patches per packed block: two vector registers on AVX2, four on NEON.
const LANES: usize = 16;
/// Query patches per kernel call.
const ROWS: usize = 4;
/// Marks padding in the packed sources (never a real image index, never excluded by mistake).
const PADDING: u32 = u32::MAX;

/// The scan's compiled variants; each is tested against a brute-force search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Separate multiply and add (baseline x86-64).
    Portable,
    /// Fused multiply-add (aarch64: NEON; elsewhere a library call, correct but slow).
    Fused,
    /// Compiled for AVX2 and FMA (x86-64 CPUs that have them).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    /// The fastest variant this CPU runs.
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernel::Avx2Fma;
        }
        if cfg!(target_arch = "aarch64") {
            Kernel::Fused
        } else {
            Kernel::Portable
        }
    }

    /// Every variant this CPU can run.
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable, Kernel::Fused];
        #[cfg(target_arch = "x86_64")]
        if Kernel::best() == Kernel::Avx2Fma {
            kernels.push(Kernel::Avx2Fma);
        }
        kernels
    }
}

/// Nearest-neighbour search against one memory bank; buffers reused from frame to frame.
#[derive(Debug, Clone)]
pub struct NearestSearch {
    kernel: Kernel,
    layers: usize,
    dim: usize,
    /// `[blocks, L*D, LANES]`: the bank's features, block by block, feature-major in a block.
    packed: Vec<f32>,
    /// `[blocks * LANES]`: the good image each packed patch came from ([`PADDING`] for none).
    sources: Vec<u32>,
    /// `[ceil(blocks / LANES), L*D, LANES]`: the blocks' centroids, packed like the patches.
    centroids: Vec<f32>,
    /// `[blocks]`: each block's radius around its centroid.
    radii: Vec<f32>,
    /// Query patches, `[N rounded up to ROWS, L*D]`.
    query: Vec<f32>,
    /// `[N rounded up to ROWS, blocks rounded up to LANES]`: query · centroid.
    centroid_similarity: Vec<f32>,
    /// Best similarity so far per query patch.
    best: Vec<f32>,
}

impl NearestSearch {
    /// Groups and packs `bank` for searching `patches` query patches per frame.
    pub fn new(bank: &MemoryBank, patches: usize) -> Self {
        let width = bank.width();
        let order = group_into_blocks(&bank.features, width);
        let blocks = order.len().div_ceil(LANES);
        let mut packed = vec![0.0; blocks * width * LANES];
        let mut sources = vec![PADDING; blocks * LANES];
        let centroid_blocks = blocks.div_ceil(LANES);
        let mut centroids = vec![0.0; centroid_blocks * width * LANES];
        let mut radii = vec![0.0; blocks];
        for (block, members) in order.chunks(LANES).enumerate() {
            let mut centroid = vec![0.0f64; width];
            for (lane, &patch) in members.iter().enumerate() {
                let features = &bank.features[patch * width..][..width];
                sources[block * LANES + lane] = bank.sources[patch];
                for (k, value) in features.iter().enumerate() {
                    packed[(block * width + k) * LANES + lane] = *value;
                    centroid[k] += *value as f64 / members.len() as f64;
                }
            }
            radii[block] = (members.iter())
                .map(|&patch| {
                    let features = &bank.features[patch * width..][..width];
                    features.iter().zip(&centroid).map(|(v, c)| (*v as f64 - c).powi(2)).sum::<f64>().sqrt()
                })
                .fold(0.0, f64::max) as f32;
            for (k, value) in centroid.iter().enumerate() {
                centroids[((block / LANES) * width + k) * LANES + block % LANES] = *value as f32;
            }
        }
        let rows = patches.div_ceil(ROWS) * ROWS;
        NearestSearch {
            kernel: Kernel::best(),
            layers: bank.layers,
            dim: bank.dim,
            packed,
            sources,
            centroids,
            radii,
            query: vec![0.0; rows * width],
            centroid_similarity: vec![0.0; rows * centroid_blocks * LANES],
            best: vec![f32::NEG_INFINITY; rows],
        }
    }

    /// Writes into `out` (`N`) each patch's memory distance. `features` is the model's
    /// `[L, N, D]` output; memory patches from good image `exclude` are skipped (leave-one-out).
    pub(crate) fn distances(&mut self, features: &[f32], exclude: Option<u32>, out: &mut [f32]) {
        let (l, d) = (self.layers, self.dim);
        let width = l * d;
        let n = out.len();
        assert_eq!(features.len(), n * width, "patch features do not match the memory's layers x dim");
        assert!(n <= self.best.len(), "more query patches than the search was made for");
        for layer in 0..l {
            for i in 0..n {
                let from = &features[(layer * n + i) * d..][..d];
                self.query[i * width + layer * d..][..d].copy_from_slice(from);
            }
        }
        self.best.fill(f32::NEG_INFINITY);
        let scan = Scan { width, exclude: exclude.unwrap_or(PADDING) };
        scan.run(self);
        let inv_layers = 1.0 / l as f32;
        for (o, best) in out.iter_mut().zip(&self.best) {
            *o = 1.0 - best * inv_layers;
        }
    }
}

/// One frame's search parameters.
struct Scan {
    width: usize,
    /// Source image to skip; [`PADDING`] (skipped anyway) for none.
    exclude: u32,
}

impl Scan {
    fn run(&self, search: &mut NearestSearch) {
        match search.kernel {
            Kernel::Portable => self.run_portable::<false>(search),
            Kernel::Fused => self.run_portable::<true>(search),
            // SAFETY: `Kernel::best` chose it only where the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { self.run_avx2_fma(search) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2_fma(&self, search: &mut NearestSearch) {
        self.run_portable::<true>(search);
    }

    /// `FUSED`: use fused multiply-add (only where the CPU has it: elsewhere it is a libm call).
    #[inline(always)]
    fn run_portable<const FUSED: bool>(&self, search: &mut NearestSearch) {
        let width = self.width;
        let block_len = width * LANES;
        let stride = search.centroid_similarity.len() / search.best.len();
        let NearestSearch { packed, sources, centroids, radii, query, centroid_similarity, best, .. } = search;
        for (rows, similarity) in
            query.chunks_exact(width * ROWS).zip(centroid_similarity.chunks_exact_mut(stride * ROWS))
        {
            let row: [&[f32]; ROWS] = std::array::from_fn(|r| &rows[r * width..][..width]);
            for (c, block) in centroids.chunks_exact(block_len).enumerate() {
                for (r, values) in tile::<FUSED>(row, block).iter().enumerate() {
                    similarity[r * stride + c * LANES..][..LANES].copy_from_slice(values);
                }
            }
        }
        let blocks = radii.len();
        for ((rows, similarity), best) in (query.chunks_exact(width * ROWS))
            .zip(centroid_similarity.chunks_exact(stride * ROWS))
            .zip(best.chunks_exact_mut(ROWS))
        {
            let row: [&[f32]; ROWS] = std::array::from_fn(|r| &rows[r * width..][..width]);
            let norm: [f32; ROWS] = row.map(|q| q.iter().map(|v| v * v).sum::<f32>().sqrt());
            let block_at =
                |block: usize| (&packed[block * block_len..][..block_len], &sources[block * LANES..][..LANES]);
            // Start from each query's most similar centroid, so that the bounds prune early.
            let starts: [usize; ROWS] = std::array::from_fn(|r| {
                let line = &similarity[r * stride..][..blocks];
                (0..blocks).max_by(|a, b| line[*a].total_cmp(&line[*b])).unwrap_or(0)
            });
            for (r, start) in starts.iter().enumerate() {
                if !starts[..r].contains(start) {
                    update_best::<FUSED>(row, block_at(*start), self.exclude, best);
                }
            }
            for block in (0..blocks).filter(|block| !starts.contains(block)) {
                // Slack for rounding, so that the pruning never drops the true nearest patch.
                let may_improve = (0..ROWS).any(|r| {
                    similarity[r * stride + block] + norm[r] * radii[block] + 1e-4 * (1.0 + norm[r]) >= best[r]
                });
                if may_improve {
                    update_best::<FUSED>(row, block_at(block), self.exclude, best);
                }
            }
        }
    }
}

/// Raises each query's `best` to its similarity with the members of one block (patches from
/// image `exclude` and padding left out).
#[inline(always)]
fn update_best<const FUSED: bool>(
    row: [&[f32]; ROWS],
    (block, sources): (&[f32], &[u32]),
    exclude: u32,
    best: &mut [f32],
) {
    for (similarities, best) in tile::<FUSED>(row, block).iter().zip(best.iter_mut()) {
        for (s, source) in similarities.iter().zip(sources) {
            if *s > *best && *source != exclude && *source != PADDING {
                *best = *s;
            }
        }
    }
}

/// Dot products of `ROWS` query patches with one packed block of `LANES` memory patches.
#[inline(always)]
fn tile<const FUSED: bool>(row: [&[f32]; ROWS], block: &[f32]) -> [[f32; LANES]; ROWS] {
    let mut acc = [[0.0f32; LANES]; ROWS];
    let width = block.len() / LANES;
    let row = row.map(|r| &r[..width]);
    for (k, memory) in block.chunks_exact(LANES).enumerate() {
        for r in 0..ROWS {
            let q = row[r][k];
            for (a, m) in acc[r].iter_mut().zip(memory) {
                *a = if FUSED { q.mul_add(*m, *a) } else { *a + q * *m };
            }
        }
    }
    acc
}

/// Orders the rows of `features` (`[count, width]`) so that each run of [`LANES`] rows is a
/// group of close patches: the set is split recursively, at a multiple of `LANES` near its
/// middle, along the line through two far-apart members.
fn group_into_blocks(features: &[f32], width: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..features.len() / width).collect();
    let mut pending = vec![(0, order.len())];
    let mut projection = Vec::new();
    while let Some((start, end)) = pending.pop() {
        if end - start <= LANES {
            continue;
        }
        let group = &mut order[start..end];
        let row = |i: usize| &features[i * width..][..width];
        let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
        let farthest_from = |from: &[f32]| {
            let distances = group.iter().map(|&i| (distance(row(i), from), i));
            distances.max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, i)| i)
        };
        let first = farthest_from(row(group[0])).unwrap_or(group[0]);
        let second = farthest_from(row(first)).unwrap_or(group[0]);
        let direction: Vec<f32> = row(second).iter().zip(row(first)).map(|(a, b)| a - b).collect();
        projection.clear();
        projection.extend(group.iter().map(|&i| (row(i).iter().zip(&direction).map(|(a, b)| a * b).sum::<f32>(), i)));
        let split = (end - start).div_ceil(2 * LANES) * LANES;
        projection.select_nth_unstable_by(split, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        group.iter_mut().zip(&projection).for_each(|(slot, (_, i))| *slot = *i);
        pending.push((start, start + split));
        pending.push((start + split, end));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit-length-per-layer features around a few centres, like patches of a few textures.
    fn clustered(count: usize, layers: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let centres: Vec<f32> = (0..5 * layers * dim).map(|_| next()).collect();
        let mut features = Vec::with_capacity(count * layers * dim);
        for i in 0..count {
            let centre = &centres[(i % 5) * layers * dim..][..layers * dim];
            for layer in centre.chunks_exact(dim) {
                let v: Vec<f32> = layer.iter().map(|c| c + 0.3 * next()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                features.extend(v.iter().map(|x| x / norm));
            }
        }
        features
    }

    /// The definition: one minus the best layer-averaged similarity over allowed patches.
    fn brute_force(bank: &MemoryBank, query: &[f32], exclude: Option<u32>) -> Vec<f32> {
        let width = bank.width();
        query
            .chunks_exact(width)
            .map(|q| {
                let best = (bank.features.chunks_exact(width).zip(&bank.sources))
                    .filter(|(_, source)| Some(**source) != exclude)
                    .map(|(m, _)| q.iter().zip(m).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max);
                1.0 - best / bank.layers as f32
            })
            .collect()
    }

    #[test]
    fn pruned_search_finds_what_a_full_scan_finds() {
        let (layers, dim, patches) = (2, 24, 30);
        // 203 patches: not a multiple of the block size, so the last block has padding.
        let count = 203;
        let bank = MemoryBank {
            made_for: crate::memory::MadeFor {
                model_sha256: String::new(),
                model_name: String::new(),
                precision: "fp32".into(),
                refine: true,
            },
            layers,
            dim,
            grid: [5, 6],
            features: clustered(count, layers, dim, 1),
            sources: (0..count as u32).map(|i| i / 20).collect(),
            threshold: None,
            good_images: 11,
            good_scores: Vec::new(),
        };
        let query = clustered(patches, layers, dim, 2);
        // The model's layout is [L, N, D]; the bank's is [N, L*D].
        let mut model_layout = vec![0.0; query.len()];
        for i in 0..patches {
            for layer in 0..layers {
                model_layout[(layer * patches + i) * dim..][..dim]
                    .copy_from_slice(&query[(i * layers + layer) * dim..][..dim]);
            }
        }
        let mut out = vec![0.0; patches];
        for kernel in Kernel::available() {
            let mut search = NearestSearch::new(&bank, patches);
            search.kernel = kernel;
            for exclude in [None, Some(0), Some(3), Some(10)] {
                search.distances(&model_layout, exclude, &mut out);
                for (got, want) in out.iter().zip(brute_force(&bank, &query, exclude)) {
                    assert!((got - want).abs() < 1e-5, "{kernel:?}, exclude {exclude:?}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn grouping_keeps_every_patch_once() {
        let features = clustered(100, 1, 8, 3);
        let mut order = group_into_blocks(&features, 8);
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }
}
