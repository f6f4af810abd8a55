//! The fitted model: operations, their Markov chain and every timing/size distribution.
//!
//! The data is `data/fit_llama1b_n1.tsv`, written once by `scripts/fit_synth.py` from the real
//! `llama1b_n1_h100_nsys2025.3` export and compiled into the crate. Distributions are empirical quantile
//! functions (quantile points on a probability grid, linear interpolation between them).

use crate::error::SynthError;
use crate::rng::Rng;

const FIT: &str = include_str!("../data/fit_llama1b_n1.tsv");

/// An empirical quantile function.
#[derive(Clone, Debug)]
pub struct Dist {
    probs: std::sync::Arc<Vec<f64>>,
    q: Vec<f64>,
}

impl Dist {
    /// A distribution from quantile points `q` at probabilities `probs` (same length, ascending).
    pub fn new(probs: std::sync::Arc<Vec<f64>>, q: Vec<f64>) -> Result<Self, SynthError> {
        if probs.len() != q.len() || q.len() < 2 {
            return Err(SynthError::Model(format!("{} quantiles for {} probabilities", q.len(), probs.len())));
        }
        Ok(Dist { probs, q })
    }

    /// The probability grid.
    pub fn probs(&self) -> Vec<f64> {
        self.probs.as_ref().clone()
    }

    /// The quantile at probability `u` in `[0, 1)`.
    pub fn at(&self, u: f64) -> f64 {
        let p = &self.probs;
        // index of the last grid point <= u
        let i = match p.binary_search_by(|x| x.partial_cmp(&u).unwrap_or(std::cmp::Ordering::Less)) {
            Ok(i) => i.min(p.len() - 2),
            Err(i) => i.saturating_sub(1).min(p.len() - 2),
        };
        let w = (u - p[i]) / (p[i + 1] - p[i]);
        self.q[i] + w * (self.q[i + 1] - self.q[i])
    }

    /// One draw, rounded to an integer.
    pub fn draw(&self, rng: &mut Rng) -> i64 {
        self.at(rng.uniform()).round() as i64
    }

    /// Mean of the interpolated quantile function (exact for piecewise-linear quantiles).
    pub fn mean(&self) -> f64 {
        self.probs.windows(2).zip(self.q.windows(2)).map(|(p, q)| (p[1] - p[0]) * (q[0] + q[1]) / 2.0).sum()
    }
}

/// A CUDA API function the generator calls.
#[derive(Clone, Debug)]
pub struct Api {
    /// Name as nsys records it (`cudaLaunchKernel_v7000`).
    pub name: String,
    /// 0 = CUDA runtime, 1 = CUDA driver (`ENUM_NSYS_EVENT_CLASS`).
    pub event_class: i64,
    /// Call duration.
    pub dur: Dist,
    /// Driver calls made right before this one (indices into `Model::apis`).
    pub prelude: Vec<usize>,
}

/// Static launch attributes of one kernel configuration.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    /// Base function name.
    pub short: String,
    /// Demangled name with templates.
    pub demangled: String,
    /// Mangled name, when nsys recorded one.
    pub mangled: Option<String>,
    /// `[registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, staticSharedMemory,
    /// dynamicSharedMemory, localMemoryPerThread, localMemoryTotal]`.
    pub attrs: [i64; 11],
    /// `sharedMemoryExecuted`, `launchType`, `cacheConfig`, `sharedMemoryLimitConfig` (None = NULL).
    pub shmem_executed: Option<i64>,
    /// `launchType`.
    pub launch_type: i64,
    /// `cacheConfig`.
    pub cache_config: i64,
    /// `sharedMemoryLimitConfig`.
    pub limit_config: Option<i64>,
}

/// What an operation does on the GPU.
#[derive(Clone, Debug)]
pub enum OpKind {
    /// A kernel launch.
    Kernel(KernelSpec),
    /// A memcpy of `copy_kind` between memory kinds.
    Memcpy {
        /// `ENUM_CUDA_MEMCPY_OPER` id.
        copy_kind: i64,
        /// `ENUM_CUDA_MEM_KIND` of the source.
        src_kind: i64,
        /// `ENUM_CUDA_MEM_KIND` of the destination.
        dst_kind: i64,
        /// Size distribution (bytes).
        bytes: Dist,
    },
    /// A memset.
    Memset {
        /// Value written.
        value: i64,
        /// `ENUM_CUDA_MEM_KIND` of the memory.
        mem_kind: i64,
        /// Size distribution (bytes).
        bytes: Dist,
    },
    /// A stream synchronisation (`syncType` as nsys 2025.3 writes it for `cudaStreamSynchronize`).
    Sync {
        /// `syncType` column value.
        sync_type: i64,
    },
}

/// One operation of the launching thread.
#[derive(Clone, Debug)]
pub struct Op {
    /// The API call that issues it (index into `Model::apis`).
    pub api: usize,
    /// How often it occurred in the fitted capture.
    pub count: u64,
    /// GPU duration (None for syncs).
    pub dur: Option<Dist>,
    /// What it is.
    pub kind: OpKind,
}

/// The whole fitted model.
#[derive(Clone, Debug)]
pub struct Model {
    /// API functions.
    pub apis: Vec<Api>,
    /// Operations (Markov states).
    pub ops: Vec<Op>,
    /// Per operation: (next operation, cumulative count) pairs.
    pub next: Vec<Vec<(usize, u64)>>,
    /// Cumulative counts of all operations (fallback when a state has no recorded successor).
    pub overall: Vec<u64>,
    /// CPU time between the end of one operation's API call and the next one's first call.
    pub cpu_gap: Dist,
    /// Time between a launch's prelude calls.
    pub prelude_gap: Dist,
    /// GPU start minus the issuing call's end when the GPU was idle (negative: started before it returned).
    pub idle_start_after_call: Dist,
    /// GPU start minus the previous end on the stream when work was queued (negative draws clamp to 0).
    pub queued_gpu_gap: Dist,
    /// Synchronize call end minus max(call start, stream drained).
    pub sync_tail: Dist,
    /// Synchronization record start minus API call start.
    pub sync_lead: Dist,
    /// Kernels per NVTX request range.
    pub kernels_per_request: f64,
    /// CPU time between two requests.
    pub request_gap: Dist,
}

fn err(line: usize, msg: &str) -> SynthError {
    SynthError::Model(format!("line {}: {msg}", line + 1))
}

fn ints(s: &str, line: usize) -> Result<Vec<f64>, SynthError> {
    s.split(' ').map(|v| v.parse::<i64>().map(|x| x as f64).map_err(|_| err(line, "bad quantile"))).collect()
}

fn int(s: &str, line: usize) -> Result<i64, SynthError> {
    s.parse::<i64>().map_err(|_| err(line, &format!("bad integer {s:?}")))
}

impl Model {
    /// Parse the embedded fit.
    pub fn load() -> Result<Model, SynthError> {
        Self::parse(FIT)
    }

    /// Parse a fit file's text.
    pub fn parse(text: &str) -> Result<Model, SynthError> {
        use std::collections::HashMap;
        use std::sync::Arc;
        let mut grids: HashMap<&str, Arc<Vec<f64>>> = HashMap::new();
        let mut named: HashMap<&str, Dist> = HashMap::new();
        let mut api_dur: Vec<(String, Dist)> = Vec::new();
        let mut preludes: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut raw_ops: Vec<(usize, &str, u64, Option<Dist>, OpKind)> = Vec::new();
        let mut edges: Vec<(usize, usize, u64)> = Vec::new();
        for (ln, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let grid = |name: &str| grids.get(name).cloned().ok_or_else(|| err(ln, "grid used before its P record"));
            match f[0] {
                "P" if f.len() == 3 => {
                    let probs = f[2]
                        .split(' ')
                        .map(|v| v.parse::<f64>().map_err(|_| err(ln, "bad probability")))
                        .collect::<Result<Vec<_>, _>>()?;
                    grids.insert(f[1], Arc::new(probs));
                }
                "D" if f.len() == 3 => {
                    named.insert(f[1], Dist::new(grid("fine")?, ints(f[2], ln)?)?);
                }
                "A" if f.len() == 3 => api_dur.push((f[1].to_string(), Dist::new(grid("fine")?, ints(f[2], ln)?)?)),
                "L" if f.len() == 3 => {
                    preludes.insert(f[1], if f[2] == "-" { vec![] } else { f[2].split(',').collect() });
                }
                "K" if f.len() == 23 => {
                    let mut attrs = [0i64; 11];
                    for (i, a) in attrs.iter_mut().enumerate() {
                        *a = int(f[4 + i], ln)?;
                    }
                    let opt = |v: i64| if v < 0 { None } else { Some(v) };
                    let spec = KernelSpec {
                        short: f[20].to_string(),
                        demangled: f[21].to_string(),
                        mangled: if f[22] == "-" { None } else { Some(f[22].to_string()) },
                        attrs,
                        shmem_executed: opt(int(f[15], ln)?),
                        launch_type: int(f[16], ln)?,
                        cache_config: int(f[17], ln)?,
                        limit_config: opt(int(f[18], ln)?),
                    };
                    let dur = Dist::new(grid("coarse")?, ints(f[19], ln)?)?;
                    raw_ops.push((
                        int(f[1], ln)? as usize,
                        f[2],
                        int(f[3], ln)? as u64,
                        Some(dur),
                        OpKind::Kernel(spec),
                    ));
                }
                "C" if f.len() == 9 => {
                    let kind = OpKind::Memcpy {
                        copy_kind: int(f[4], ln)?,
                        src_kind: int(f[5], ln)?,
                        dst_kind: int(f[6], ln)?,
                        bytes: Dist::new(grid("coarse")?, ints(f[7], ln)?)?,
                    };
                    let dur = Dist::new(grid("coarse")?, ints(f[8], ln)?)?;
                    raw_ops.push((int(f[1], ln)? as usize, f[2], int(f[3], ln)? as u64, Some(dur), kind));
                }
                "E" if f.len() == 8 => {
                    let kind = OpKind::Memset {
                        value: int(f[4], ln)?,
                        mem_kind: int(f[5], ln)?,
                        bytes: Dist::new(grid("coarse")?, ints(f[6], ln)?)?,
                    };
                    let dur = Dist::new(grid("coarse")?, ints(f[7], ln)?)?;
                    raw_ops.push((int(f[1], ln)? as usize, f[2], int(f[3], ln)? as u64, Some(dur), kind));
                }
                "Y" if f.len() == 5 => {
                    let kind = OpKind::Sync { sync_type: int(f[4], ln)? };
                    raw_ops.push((int(f[1], ln)? as usize, f[2], int(f[3], ln)? as u64, None, kind));
                }
                "T" if f.len() == 4 => {
                    edges.push((int(f[1], ln)? as usize, int(f[2], ln)? as usize, int(f[3], ln)? as u64))
                }
                _ => return Err(err(ln, &format!("unknown record {:?} with {} fields", f[0], f.len()))),
            }
        }
        let mut apis: Vec<Api> = api_dur
            .into_iter()
            .map(|(name, dur)| {
                // Driver API names start with "cu" but not "cuda".
                let event_class = if name.starts_with("cuda") { 0 } else { 1 };
                Api { name, event_class, dur, prelude: vec![] }
            })
            .collect();
        let api_index = |apis: &[Api], name: &str| {
            apis.iter()
                .position(|a| a.name == name)
                .ok_or_else(|| SynthError::Model(format!("no duration for API {name}")))
        };
        for (launch, pre) in &preludes {
            let i = api_index(&apis, launch)?;
            let p = pre.iter().map(|n| api_index(&apis, n)).collect::<Result<Vec<_>, _>>()?;
            apis[i].prelude = p;
        }
        raw_ops.sort_by_key(|o| o.0);
        let mut index = std::collections::HashMap::new();
        let mut ops = Vec::with_capacity(raw_ops.len());
        for (i, (id, api, count, dur, kind)) in raw_ops.into_iter().enumerate() {
            index.insert(id, i);
            ops.push(Op { api: api_index(&apis, api)?, count, dur, kind });
        }
        if ops.is_empty() {
            return Err(SynthError::Model("no operations".into()));
        }
        let mut next: Vec<Vec<(usize, u64)>> = vec![Vec::new(); ops.len()];
        for (a, b, n) in edges {
            let (Some(&a), Some(&b)) = (index.get(&a), index.get(&b)) else {
                return Err(SynthError::Model(format!("transition between unknown operations {a} -> {b}")));
            };
            let total = next[a].last().map_or(0, |e| e.1);
            next[a].push((b, total + n));
        }
        let mut overall = Vec::with_capacity(ops.len());
        let mut total = 0;
        for op in &ops {
            total += op.count.max(1);
            overall.push(total);
        }
        let mut take =
            |name: &str| named.remove(name).ok_or_else(|| SynthError::Model(format!("no distribution {name}")));
        Ok(Model {
            cpu_gap: take("cpu_gap")?,
            prelude_gap: take("prelude_gap")?,
            idle_start_after_call: take("idle_start_after_call")?,
            queued_gpu_gap: take("queued_gpu_gap")?,
            sync_tail: take("sync_tail")?,
            sync_lead: take("sync_lead")?,
            kernels_per_request: take("kernels_per_request")?.mean(),
            request_gap: take("request_gap")?,
            apis,
            ops,
            next,
            overall,
        })
    }

    /// The next operation after `current` (None = start of a request).
    pub fn step(&self, current: Option<usize>, rng: &mut Rng) -> usize {
        let pick = |cum: &[u64], rng: &mut Rng| -> usize {
            let total = cum[cum.len() - 1];
            let x = rng.below(total);
            cum.partition_point(|&c| c <= x)
        };
        if let Some(c) = current {
            let edges = &self.next[c];
            if !edges.is_empty() {
                let total = edges[edges.len() - 1].1;
                let x = rng.below(total);
                let i = edges.partition_point(|e| e.1 <= x);
                return edges[i].0;
            }
        }
        pick(&self.overall, rng)
    }

    /// Index of the API called `name`.
    pub fn api(&self, name: &str) -> Option<usize> {
        self.apis.iter().position(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_fit_parses_and_is_consistent() {
        let m = Model::load().unwrap();
        assert!(m.ops.len() > 100, "{} ops", m.ops.len());
        let kernels: u64 = m.ops.iter().filter(|o| matches!(o.kind, OpKind::Kernel(_))).map(|o| o.count).sum();
        // every kernel of the capture whose configuration also ran in the steady state (all but 458 of 183,594)
        assert_eq!(kernels, 183_136, "kernel count of the fitted capture");
        assert!(m.ops.iter().any(|o| matches!(o.kind, OpKind::Sync { .. })));
        assert!(m.api("cudaLaunchKernel_v7000").is_some());
        // the mean CPU gap of the capture (42.3 us) survives the quantile interpolation within 5 %
        assert!((m.cpu_gap.mean() - 42_313.0).abs() / 42_313.0 < 0.05, "{}", m.cpu_gap.mean());
    }

    #[test]
    fn quantile_function_interpolates() {
        let probs = std::sync::Arc::new(vec![0.0, 0.5, 1.0]);
        let d = Dist::new(probs, vec![10.0, 20.0, 40.0]).unwrap();
        assert_eq!(d.at(0.0), 10.0);
        assert_eq!(d.at(0.25), 15.0);
        assert_eq!(d.at(0.5), 20.0);
        assert_eq!(d.at(0.75), 30.0);
        assert!((d.mean() - 22.5).abs() < 1e-9);
    }
}
