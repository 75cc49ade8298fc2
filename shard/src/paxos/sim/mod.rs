//! # Deterministic simulation of Paxos groups
//!
//! The real [`Replica`](super::Replica) code, driven by a simulated shell, network, disk and
//! clocks. Two drivers share the node shell ([`node::SimNode`]):
//!
//! - [`scenario`]: hand-written scripts with reviewed output (data-driven tests);
//! - [`random`]: one seed drives message delay, loss, duplication and reordering, partitions,
//!   crashes that lose unsynced writes, restarts and clock offsets within ε; checkers verify
//!   agreement, lease disjointness, durability of acknowledged writes and linearizability.

pub mod node;
pub mod random;
#[cfg(test)]
pub mod scenario;

#[cfg(test)]
mod tests {
    #[test]
    fn scenarios() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/paxos");
        let mut scripts: Vec<_> = std::fs::read_dir(&dir)
            .expect("testdata/paxos exists")
            .map(|e| e.expect("readable dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        scripts.sort();
        assert!(!scripts.is_empty(), "no scenario scripts in {}", dir.display());
        for path in scripts {
            let mut runner = super::scenario::Scenario::default();
            if let Err(e) = goldenscript::run(&mut runner, &path) {
                panic!("scenario {} failed: {e}", path.display());
            }
        }
    }
}
