//! The processes of one run and what they say to each other: a [`Collective`] sums gradients
//! and logged figures over every rank, broadcasts rank 0's weights and resume state, and holds
//! ranks at a barrier. One process is the [`Single`] world (every operation is the identity);
//! several come from a launcher — `mpirun`, Slurm's `srun` — and talk over MPI (the binary's
//! `mpi` feature installs that world at start, see [`install`]). [`launch`] reads which from
//! the environment the launcher sets, so a binary built without MPI refuses to run as one rank
//! of many instead of training N unrelated copies into one directory.
//!
//! [`threads`] gives a world of threads in one process: the data-parallel loop can then be
//! checked against the one-process loop without any launcher.

use std::sync::{Arc, Barrier, Mutex, OnceLock};

/// The ranks of a run. Every rank must make the same calls in the same order with buffers of
/// the same length; a failure is fatal to the run (MPI's own default), never a silent skip.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// How many processes the run has.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place: every rank gets the same sums.
    fn all_reduce_f32(&self, buf: &mut [f32]);
    /// As [`Collective::all_reduce_f32`], in `f64` (losses, counts, logged figures).
    fn all_reduce_f64(&self, buf: &mut [f64]);
    /// Rank `root`'s bytes replace everyone else's (any length: the others' are resized).
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize);
    /// Rank `root`'s values replace everyone else's; every rank passes the same length.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize);
    /// Waits until every rank has arrived.
    fn barrier(&self);
    /// Ends every process of the run with `code`: a rank that failed must not leave the others
    /// waiting in a collective forever.
    fn abort(&self, code: i32) -> !;
    /// What carries the messages, for the log ("single process", "MPI (Open MPI 4.1.4)").
    fn transport(&self) -> String;
}

/// Convenience calls every rank makes alike.
pub trait CollectiveExt: Collective {
    /// Rank 0: the one that writes checkpoints, metrics and logs.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Rank 0's flag, on every rank.
    fn agree(&self, flag: bool) -> bool {
        let mut b = vec![flag as u8];
        self.broadcast_bytes(&mut b, 0);
        b[0] != 0
    }

    /// Whether `flag` holds on any rank (every rank gets the same answer).
    fn any(&self, flag: bool) -> bool {
        let mut x = [flag as u8 as f64];
        self.all_reduce_f64(&mut x);
        x[0] > 0.0
    }

    /// Rank 0's string, on every rank.
    fn broadcast_string(&self, s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        self.broadcast_bytes(&mut b, 0);
        String::from_utf8(b).expect("rank 0 sent UTF-8")
    }

    /// Runs `f` on one rank at a time, rank 0 first (each waits for the one before): work
    /// that writes shared files — tokenised corpora — is then written once and reused by
    /// the ranks after it, whether or not their machines share the filesystem.
    fn one_at_a_time<T>(&self, mut f: impl FnMut() -> T) -> T {
        let mut out = None;
        for r in 0..self.size() {
            if r == self.rank() {
                out = Some(f());
            }
            if self.size() > 1 {
                self.barrier();
            }
        }
        out.expect("every rank takes a turn")
    }
}

impl<C: Collective + ?Sized> CollectiveExt for C {}

/// The world of one process.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _: &mut [f32]) {}
    fn all_reduce_f64(&self, _: &mut [f64]) {}
    fn broadcast_bytes(&self, _: &mut Vec<u8>, _: usize) {}
    fn broadcast_f32(&self, _: &mut [f32], _: usize) {}
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn transport(&self) -> String {
        "single process".into()
    }
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// Makes `world` this process's world (once, at start, before any stage runs).
pub fn install(world: Box<dyn Collective>) {
    if WORLD.set(world).is_err() {
        panic!("the process's collective was installed twice");
    }
}

/// This process's world: the one [`install`]ed, else [`Single`].
pub fn world() -> &'static dyn Collective {
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// How this process was started, read from the variables launchers set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Alone (or as the only rank of a launcher's run).
    Single,
    /// One rank of several under an MPI launcher (`mpirun`, `mpiexec`, Slurm's `srun`).
    Mpi {
        rank: usize,
        size: usize,
        /// The variable that said so, for messages.
        via: &'static str,
    },
    /// One rank of several as torchrun starts them (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`):
    /// NCCL's way of meeting, which needs the GPU build.
    Torchrun { rank: usize, size: usize },
}

/// Reads the launcher's variables through `var` (the environment, or a test's map). MPI's
/// are looked at first: Open MPI's, then the PMI/PMIx ones MPICH, Intel MPI and `srun --mpi`
/// set, then Slurm's own; torchrun's last.
pub fn launch(var: impl Fn(&str) -> Option<String>) -> Result<Launch, String> {
    let num = |name: &str| -> Result<Option<usize>, String> {
        match var(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("environment variable {name}={v:?} is not a number")),
        }
    };
    const MPI: [(&str, &str); 4] = [
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
    ];
    for (rank_var, size_var) in MPI {
        if let (Some(rank), Some(size)) = (num(rank_var)?, num(size_var)?) {
            return checked(rank, size, rank_var, size_var).map(|(rank, size)| {
                if size == 1 {
                    Launch::Single
                } else {
                    Launch::Mpi {
                        rank,
                        size,
                        via: rank_var,
                    }
                }
            });
        }
    }
    if let (Some(rank), Some(size)) = (num("RANK")?, num("WORLD_SIZE")?) {
        let (rank, size) = checked(rank, size, "RANK", "WORLD_SIZE")?;
        return Ok(if size == 1 {
            Launch::Single
        } else {
            Launch::Torchrun { rank, size }
        });
    }
    Ok(Launch::Single)
}

fn checked(rank: usize, size: usize, rv: &str, sv: &str) -> Result<(usize, usize), String> {
    if size == 0 || rank >= size {
        return Err(format!(
            "{rv}={rank} with {sv}={size}: a rank must lie in 0..size"
        ));
    }
    Ok((rank, size))
}

/// `n` ranks in one process, one per thread: give each thread one of the returned worlds.
/// Sums add the ranks' values in rank order, so every rank gets the same bits.
pub fn threads(n: usize) -> Vec<Arc<dyn Collective>> {
    let shared = Arc::new(Shared {
        n,
        slots: Mutex::new(vec![Vec::new(); n]),
        barrier: Barrier::new(n),
    });
    (0..n)
        .map(|rank| {
            Arc::new(ThreadRank {
                rank,
                shared: shared.clone(),
            }) as Arc<dyn Collective>
        })
        .collect()
}

struct Shared {
    n: usize,
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadRank {
    /// Every rank posts its bytes, then reads all of them through `read` (in rank order).
    fn exchange(&self, mine: Vec<u8>, read: impl FnOnce(&[Vec<u8>])) {
        self.shared.slots.lock().expect("slots")[self.rank] = mine;
        self.shared.barrier.wait();
        read(&self.shared.slots.lock().expect("slots"));
        // Nobody posts the next message before everyone has read this one.
        self.shared.barrier.wait();
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.n
    }
    fn all_reduce_f32(&self, buf: &mut [f32]) {
        self.exchange(le_bytes(buf), |all| {
            buf.fill(0.0);
            for s in all {
                for (b, c) in buf.iter_mut().zip(s.chunks_exact(4)) {
                    *b += f32::from_le_bytes(c.try_into().expect("4 bytes"));
                }
            }
        });
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) {
        let mine = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.exchange(mine, |all| {
            buf.fill(0.0);
            for s in all {
                for (b, c) in buf.iter_mut().zip(s.chunks_exact(8)) {
                    *b += f64::from_le_bytes(c.try_into().expect("8 bytes"));
                }
            }
        });
    }
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
        self.exchange(buf.clone(), |all| *buf = all[root].clone());
    }
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
        self.exchange(le_bytes(buf), |all| {
            for (b, c) in buf.iter_mut().zip(all[root].chunks_exact(4)) {
                *b = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        });
    }
    fn barrier(&self) {
        self.shared.barrier.wait();
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn transport(&self) -> String {
        "threads of one process".into()
    }
}

fn le_bytes(buf: &[f32]) -> Vec<u8> {
    buf.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn launchers_are_told_apart_by_their_variables() {
        assert_eq!(launch(env(&[])), Ok(Launch::Single));
        let ompi = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2")];
        assert_eq!(
            launch(env(&ompi)),
            Ok(Launch::Mpi {
                rank: 1,
                size: 2,
                via: "OMPI_COMM_WORLD_RANK"
            })
        );
        let slurm = [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8")];
        assert!(matches!(
            launch(env(&slurm)),
            Ok(Launch::Mpi {
                rank: 3,
                size: 8,
                ..
            })
        ));
        let pmi = [("PMI_RANK", "0"), ("PMI_SIZE", "4")];
        assert!(matches!(
            launch(env(&pmi)),
            Ok(Launch::Mpi {
                rank: 0,
                size: 4,
                ..
            })
        ));
        let torch = [("RANK", "1"), ("WORLD_SIZE", "4"), ("MASTER_ADDR", "n1")];
        assert_eq!(
            launch(env(&torch)),
            Ok(Launch::Torchrun { rank: 1, size: 4 })
        );
        // One rank of one is a plain run, whoever started it.
        let one = [("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "1")];
        assert_eq!(launch(env(&one)), Ok(Launch::Single));
    }

    #[test]
    fn nonsense_launcher_variables_are_errors() {
        let e = launch(env(&[("PMI_RANK", "x"), ("PMI_SIZE", "2")])).unwrap_err();
        assert!(e.contains("PMI_RANK") && e.contains("not a number"), "{e}");
        let e = launch(env(&[("RANK", "4"), ("WORLD_SIZE", "4")])).unwrap_err();
        assert!(e.contains("RANK=4") && e.contains("WORLD_SIZE=4"), "{e}");
    }

    /// What one rank saw: a sum in f32 and in f64, a broadcast, `any`, and its turn.
    type Seen = (Vec<f32>, Vec<f64>, Vec<u8>, bool, usize);

    #[test]
    fn thread_ranks_sum_and_broadcast_alike() {
        let worlds = threads(3);
        let out: Vec<Seen> = std::thread::scope(|s| {
            let hs: Vec<_> = worlds
                .iter()
                .map(|w| {
                    s.spawn(move || {
                        let r = w.rank();
                        let mut a = vec![r as f32, 1.0];
                        w.all_reduce_f32(&mut a);
                        let mut b = vec![0.5 * r as f64];
                        w.all_reduce_f64(&mut b);
                        let mut c = vec![r as u8; r + 1];
                        w.broadcast_bytes(&mut c, 2);
                        let any = w.any(r == 1);
                        let turn = w.one_at_a_time(|| r);
                        (a, b, c, any, turn)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (r, (a, b, c, any, turn)) in out.into_iter().enumerate() {
            assert_eq!(a, vec![3.0, 3.0]);
            assert_eq!(b, vec![1.5]);
            assert_eq!(c, vec![2, 2, 2]);
            assert!(any);
            assert_eq!(turn, r);
        }
    }
}
