//! The CUDA collective: NCCL through cudarc's result-level API on the tensors' own device memory
//! (`Tensor::data_ptr`). The unique id is made by rank 0 and sent to the others over the TCP rendezvous,
//! which also carries barriers and the small f64 reductions. libcuda and libnccl are opened at run time, so
//! this compiles and the binary runs everywhere; without them [`NcclCollective::new`] is a clear error.
//!
//! Streams: tch exposes none, so every collective synchronises the device before and after and runs on the
//! legacy default stream (the one libtorch uses unless told otherwise).

use std::ffi::CStr;

use cudarc::nccl::sys as nccl;
use tch::{Device, Kind, Tensor};

use super::watchdog::{exit_on_expiry, Watchdog};
use super::{Collective, TcpCollective};
use crate::error::{Error, Result};

pub struct NcclCollective {
    tcp: TcpCollective,
    comm: nccl::ncclComm_t,
    device: usize,
    /// NCCL calls block without a timeout of their own; an overrun ends the process.
    watchdog: Watchdog,
}

// SAFETY: the communicator is only used through &mut self, from one thread at a time.
unsafe impl Send for NcclCollective {}

fn nccl_error(what: &str, e: cudarc::nccl::result::NcclError) -> Error {
    // SAFETY: ncclGetErrorString returns a static C string for any result code.
    let text = unsafe {
        let p = nccl::ncclGetErrorString(e.0);
        if p.is_null() {
            format!("{:?}", e.0)
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Error::Nccl(format!("NCCL {what} failed: {text}"))
}

/// Whether the NCCL and CUDA driver libraries can be opened (checked before any call: cudarc panics on a
/// missing library).
pub fn libraries_present() -> bool {
    // SAFETY: these only try to dlopen the libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && nccl::is_culib_present() }
}

/// The NCCL library's version (e.g. "2.28.9"), None when libnccl cannot be loaded.
pub fn library_version() -> Option<String> {
    // SAFETY: this only tries to dlopen the library.
    if !unsafe { nccl::is_culib_present() } {
        return None;
    }
    let code = cudarc::nccl::result::get_nccl_version().ok()?;
    // NCCL ≥ 2.9 encodes major * 10000 + minor * 100 + patch
    Some(format!(
        "{}.{}.{}",
        code / 10000,
        code / 100 % 100,
        code % 100
    ))
}

impl NcclCollective {
    /// Creates the communicator of this rank on CUDA device `device`; `tcp` is the joined rendezvous. A
    /// collective (or the communicator's creation) that takes longer than `timeout` ends the process.
    pub fn new(
        mut tcp: TcpCollective,
        device: usize,
        timeout: std::time::Duration,
    ) -> Result<Self> {
        if !libraries_present() {
            return Err(Error::Nccl(
                "the NCCL backend needs libcuda and libnccl (libnccl.so on the library path, e.g. from the \
                 nvidia-nccl wheel); none was found. Use STORM_DIST_BACKEND=tcp to all-reduce over TCP instead"
                    .into(),
            ));
        }
        bind_device(device)?;
        let id_bytes = if tcp.is_rank0() {
            let id =
                cudarc::nccl::result::get_uniqueid().map_err(|e| nccl_error("get_uniqueid", e))?;
            id.internal.iter().map(|c| *c as u8).collect()
        } else {
            Vec::new()
        };
        let id_bytes = tcp.broadcast_bytes(id_bytes)?;
        let mut id = nccl::ncclUniqueId { internal: [0; 128] };
        if id_bytes.len() != id.internal.len() {
            return Err(Error::Nccl(format!(
                "NCCL unique id from rank 0 has {} bytes, expected {}",
                id_bytes.len(),
                id.internal.len()
            )));
        }
        for (d, s) in id.internal.iter_mut().zip(&id_bytes) {
            *d = *s as std::ffi::c_char;
        }
        let watchdog = Watchdog::start(timeout, exit_on_expiry(tcp.rank()))
            .map_err(|e| Error::Nccl(format!("starting the NCCL watchdog: {e}")))?;
        let mut comm = std::ptr::null_mut();
        // SAFETY: comm is a valid out-pointer; id came from ncclGetUniqueId on rank 0.
        watchdog
            .guard("NCCL comm_init_rank", || unsafe {
                cudarc::nccl::result::comm_init_rank(
                    &mut comm,
                    tcp.world_size() as i32,
                    id,
                    tcp.rank() as i32,
                )
            })
            .map_err(|e| nccl_error("comm_init_rank", e))?;
        Ok(NcclCollective {
            tcp,
            comm,
            device,
            watchdog,
        })
    }

    fn check(&self, t: &Tensor) -> Result<()> {
        if t.device() != Device::Cuda(self.device) || t.kind() != Kind::Float || !t.is_contiguous()
        {
            return Err(Error::Nccl(format!(
                "NCCL collectives take contiguous f32 tensors on cuda:{}; got {:?} {:?}",
                self.device,
                t.kind(),
                t.device()
            )));
        }
        Ok(())
    }

    fn run(
        &mut self,
        t: &Tensor,
        what: &str,
        call: impl FnOnce(*mut std::ffi::c_void, usize, nccl::ncclComm_t) -> nccl::ncclResult_t,
    ) -> Result<()> {
        if t.device() == Device::Cpu {
            return Err(Error::Nccl(format!("NCCL {what} of a CPU tensor")));
        }
        self.check(t)?;
        let (device, comm) = (self.device as i64, self.comm);
        let label = format!("NCCL {what} of {} values", t.numel());
        self.watchdog.guard(&label, || {
            tch::Cuda::synchronize(device);
            let status = call(t.data_ptr(), t.numel(), comm);
            status.result().map_err(|e| nccl_error(what, e))?;
            tch::Cuda::synchronize(device);
            Ok(())
        })
    }
}

/// Makes device `i`'s primary context current on this thread (the runtime and NCCL use it).
fn bind_device(i: usize) -> Result<()> {
    use cudarc::driver::result as cu;
    let err = |what: &str, e: cu::DriverError| Error::Nccl(format!("CUDA {what} failed: {e}"));
    cu::init().map_err(|e| err("init", e))?;
    let dev = cu::device::get(i as i32).map_err(|e| err("device_get", e))?;
    // SAFETY: dev is a valid device handle; the primary context stays retained for the process.
    unsafe {
        let ctx = cu::primary_ctx::retain(dev).map_err(|e| err("primary_ctx_retain", e))?;
        cu::ctx::set_current(ctx).map_err(|e| err("ctx_set_current", e))?;
    }
    Ok(())
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: comm was created by comm_init_rank and is destroyed once.
        let _ = unsafe { cudarc::nccl::result::comm_destroy(self.comm) };
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.tcp.rank()
    }
    fn world_size(&self) -> usize {
        self.tcp.world_size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<()> {
        self.run(t, "all_reduce", |p, n, comm| unsafe {
            nccl::ncclAllReduce(
                p,
                p,
                n,
                nccl::ncclDataType_t::ncclFloat32,
                nccl::ncclRedOp_t::ncclSum,
                comm,
                std::ptr::null_mut(),
            )
        })
    }

    fn all_reduce_mean(&mut self, t: &Tensor) -> Result<()> {
        self.run(t, "all_reduce", |p, n, comm| unsafe {
            nccl::ncclAllReduce(
                p,
                p,
                n,
                nccl::ncclDataType_t::ncclFloat32,
                nccl::ncclRedOp_t::ncclAvg,
                comm,
                std::ptr::null_mut(),
            )
        })
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<()> {
        self.run(t, "broadcast", |p, n, comm| unsafe {
            nccl::ncclBroadcast(
                p,
                p,
                n,
                nccl::ncclDataType_t::ncclFloat32,
                0,
                comm,
                std::ptr::null_mut(),
            )
        })
    }

    fn barrier(&mut self) -> Result<()> {
        self.tcp.barrier()
    }

    fn all_reduce_f64(&mut self, values: &mut [f64]) -> Result<()> {
        self.tcp.all_reduce_f64(values)
    }

    fn broadcast_bytes(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        self.tcp.broadcast_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn presence_check_never_panics() {
        // On a machine without CUDA this is false; on a GPU machine either is fine.
        let _ = super::libraries_present();
    }
}
