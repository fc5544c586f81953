//! The rayon backend's three required kernels, for test backends that change something else.

/// `coset_ntt_batch`, `hash_rows` and `hash_pairs` of an `impl Backend`, from the rayon backend.
macro_rules! rayon_kernels {
    () => {
        fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
            RayonBackend.coset_ntt_batch(data, n, shift)
        }
        fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
            RayonBackend.hash_rows(rows, width, out)
        }
        fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
            RayonBackend.hash_pairs(children, out)
        }
    };
}
