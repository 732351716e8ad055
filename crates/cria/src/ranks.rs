//! How this process takes part in a run of several: read from the launcher's environment at
//! start (see cria_train::collective::launch), then MPI joined when the binary was built with
//! the `mpi` feature — or a clear refusal when it was not, since N copies that do not talk
//! would each train into the same run directory.

use cria_train::collective::{self, Launch};

/// Held by `main` for the life of the process: dropping it leaves MPI (`MPI_Finalize`).
#[derive(Default)]
pub struct Joined {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
    /// This process's rank and the run's size.
    pub rank: usize,
    pub size: usize,
}

impl Joined {
    /// Leaves the run (MPI_Finalize when MPI was joined): the last thing a rank does.
    pub fn leave(self) {}
}

/// Joins the run the launcher started, if any, and installs its world.
pub fn join() -> anyhow::Result<Joined> {
    let launch = collective::launch(|k| std::env::var(k).ok()).map_err(anyhow::Error::msg)?;
    match launch {
        Launch::Single => Ok(Joined {
            size: 1,
            ..Default::default()
        }),
        Launch::Mpi { rank, size, via } => join_mpi(rank, size, via),
        Launch::Torchrun { rank, size } => anyhow::bail!(
            "started as rank {rank} of {size} by torchrun-style variables (RANK, WORLD_SIZE): \
             ranks started that way meet over NCCL, which needs a GPU build cria does not have \
             yet. On CPU nodes launch with MPI instead: `mpirun -np {size} cria …` or Slurm's \
             `srun`, with a cria built with `--features mpi`"
        ),
    }
}

#[cfg(not(feature = "mpi"))]
fn join_mpi(rank: usize, size: usize, via: &str) -> anyhow::Result<Joined> {
    anyhow::bail!(
        "started as rank {rank} of {size} ({via} is set: an MPI launcher such as mpirun or srun \
         started this process), but this cria was built without MPI, so the {size} processes \
         could not share their work and would each train into the same directory. Build with \
         MPI (Debian: `apt install libopenmpi-dev openmpi-bin libclang-dev`, then `cargo \
         build --release --features mpi`), or run cria without the launcher"
    )
}

#[cfg(feature = "mpi")]
fn join_mpi(rank: usize, size: usize, via: &str) -> anyhow::Result<Joined> {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        .ok_or_else(|| anyhow::anyhow!("MPI was already initialised in this process"))?;
    use cria_train::collective::Collective;
    let world = mpi_world::MpiWorld::new(universe.world());
    if world.rank() != rank || world.size() != size {
        anyhow::bail!(
            "MPI says rank {} of {}, but {via} said rank {rank} of {size}: the launcher and the \
             MPI library cria was built with do not belong together",
            world.rank(),
            world.size()
        );
    }
    collective::install(Box::new(world));
    Ok(Joined {
        _universe: Some(universe),
        rank,
        size,
    })
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use cria_train::collective::Collective;
    use mpi::collective::SystemOperation;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use std::sync::Mutex;

    /// MPI_COMM_WORLD. Calls are serialised by a lock (MPI was initialised with
    /// `MPI_THREAD_SERIALIZED`): the training loop makes them from one thread anyway.
    pub struct MpiWorld {
        comm: Mutex<SimpleCommunicator>,
        rank: usize,
        size: usize,
    }

    // SAFETY: an MPI communicator is a handle the library lets any thread use when calls do not
    // overlap (MPI_THREAD_SERIALIZED); the lock makes sure they do not.
    unsafe impl Send for MpiWorld {}
    unsafe impl Sync for MpiWorld {}

    /// MPI counts are C ints: long buffers travel in pieces of this many elements.
    const PIECE: usize = 1 << 28;

    impl MpiWorld {
        pub fn new(comm: SimpleCommunicator) -> Self {
            let (rank, size) = (comm.rank() as usize, comm.size() as usize);
            MpiWorld {
                comm: Mutex::new(comm),
                rank,
                size,
            }
        }

        fn comm(&self) -> std::sync::MutexGuard<'_, SimpleCommunicator> {
            self.comm.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_f32(&self, buf: &mut [f32]) {
            let comm = self.comm();
            for piece in buf.chunks_mut(PIECE) {
                let mine = piece.to_vec();
                comm.all_reduce_into(&mine[..], piece, SystemOperation::sum());
            }
        }
        fn all_reduce_f64(&self, buf: &mut [f64]) {
            let comm = self.comm();
            for piece in buf.chunks_mut(PIECE) {
                let mine = piece.to_vec();
                comm.all_reduce_into(&mine[..], piece, SystemOperation::sum());
            }
        }
        fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
            let comm = self.comm();
            let from = comm.process_at_rank(root as i32);
            let mut len = buf.len() as u64;
            from.broadcast_into(&mut len);
            buf.resize(len as usize, 0);
            for piece in buf.chunks_mut(PIECE) {
                from.broadcast_into(piece);
            }
        }
        fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
            let comm = self.comm();
            let from = comm.process_at_rank(root as i32);
            for piece in buf.chunks_mut(PIECE) {
                from.broadcast_into(piece);
            }
        }
        fn barrier(&self) {
            self.comm().barrier();
        }
        fn abort(&self, code: i32) -> ! {
            self.comm().abort(code)
        }
        fn transport(&self) -> String {
            let version = mpi::environment::library_version().unwrap_or_default();
            format!("MPI ({})", version.split(',').next().unwrap_or("").trim())
        }
    }
}
