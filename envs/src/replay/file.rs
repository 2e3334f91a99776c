//! Reading and writing the trace file (format in the docs of
//! [`crate::replay`]).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{
    validate_content, ReplayBackend, StageTrace, TraceHeader, TraceMeta, TRACE_FORMAT_VERSION,
    TRACE_METADATA_KEY,
};
use crate::error::{Error, Result};

impl ReplayBackend {
    /// Writes the trace to `path` atomically (see the module docs for the
    /// format).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = serde_json::to_string(&self.header())
            .map_err(|e| Error::trace(Some(path), format!("cannot encode the header: {e}")))?;
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let n = self.labels.len();
        let c = self.meta.num_classes;
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for t in 0..self.costs.len() {
            owned.push((
                format!("stage{t}.features"),
                Dtype::F32,
                vec![n, self.feature_dims[t]],
                f32_bytes(&self.features[t]),
            ));
            owned.push((
                format!("stage{t}.probs"),
                Dtype::F32,
                vec![n, c],
                f32_bytes(&self.probs[t]),
            ));
        }
        owned.push((
            "labels".into(),
            Dtype::I64,
            vec![n],
            self.labels
                .iter()
                .flat_map(|&y| (y as i64).to_le_bytes())
                .collect(),
        ));
        owned.push((
            "costs".into(),
            Dtype::F64,
            vec![self.costs.len()],
            self.costs.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
        let views = owned
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::trace(Some(path), format!("cannot build tensors: {e}")))?;
        let metadata = HashMap::from([(TRACE_METADATA_KEY.to_string(), header)]);
        let bytes = safetensors::tensor::serialize(views, Some(metadata))
            .map_err(|e| Error::trace(Some(path), format!("cannot serialise: {e}")))?;
        crate::fsutil::write_atomic(path, &bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads and validates a trace file; every problem is an
    /// [`Error::Trace`] naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, Some(path))
    }

    /// Parses a trace from the bytes of a file (`path` only names it in
    /// errors).
    pub fn from_bytes(bytes: &[u8], path: Option<&Path>) -> Result<Self> {
        let err = |p: String| Error::trace(path, p);
        let (_, raw_meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let json = raw_meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(TRACE_METADATA_KEY))
            .ok_or_else(|| {
                err(format!(
                    "no `{TRACE_METADATA_KEY}` entry in the safetensors metadata (not a cascade trace?)"
                ))
            })?;
        let version: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            err(format!(
                "the `{TRACE_METADATA_KEY}` header is not JSON: {e}"
            ))
        })?;
        match version.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == TRACE_FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(err(format!(
                    "unknown trace format version {v} (this build reads version {TRACE_FORMAT_VERSION})"
                )))
            }
            None => return Err(err("the header has no integer `format_version`".into())),
        }
        let header: TraceHeader =
            serde_json::from_value(version).map_err(|e| err(format!("bad header: {e}")))?;
        let k = header.stages.len();
        let n = header.num_samples;
        let c = header.num_classes;

        let tensor = |name: &str| -> Result<TensorView<'_>> {
            st.tensor(name)
                .map_err(|_| err(format!("missing tensor `{name}`")))
        };
        let shape_is = |name: &str, v: &TensorView<'_>, want: &[usize]| -> Result<()> {
            if v.shape() != want {
                return Err(err(format!(
                    "tensor `{name}` has shape {:?}, expected {want:?}",
                    v.shape()
                )));
            }
            Ok(())
        };
        let dtype_is = |name: &str, v: &TensorView<'_>, want: Dtype| -> Result<()> {
            if v.dtype() != want {
                return Err(err(format!(
                    "tensor `{name}` has dtype {:?}, expected {want:?}",
                    v.dtype()
                )));
            }
            Ok(())
        };
        for name in st.names() {
            if let Some(t) = name
                .strip_prefix("stage")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
            {
                if t >= k {
                    return Err(err(format!(
                        "tensor `{name}` but the header names {k} stages"
                    )));
                }
            }
        }

        let costs_v = tensor("costs")?;
        dtype_is("costs", &costs_v, Dtype::F64)?;
        shape_is("costs", &costs_v, &[k])?;
        let costs: Vec<f64> = costs_v
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")))
            .collect();
        for (t, (a, s)) in costs.iter().zip(&header.stages).enumerate() {
            let tol = 1e-9 * a.abs().max(s.cost.abs());
            if (a - s.cost).abs() > tol || a.is_nan() != s.cost.is_nan() {
                return Err(err(format!(
                    "costs mismatch at stage{t}: tensor `costs` says {a}, the header says {}",
                    s.cost
                )));
            }
        }

        let labels_v = tensor("labels")?;
        shape_is("labels", &labels_v, &[n])?;
        let labels = read_labels(&labels_v).map_err(|p| err(format!("tensor `labels`: {p}")))?;

        let mut stages = Vec::with_capacity(k);
        for (t, info) in header.stages.iter().enumerate() {
            let fname = format!("stage{t}.features");
            let fv = tensor(&fname)?;
            dtype_is(&fname, &fv, Dtype::F32)?;
            shape_is(&fname, &fv, &[n, info.feature_dim])?;
            let pname = format!("stage{t}.probs");
            let pv = tensor(&pname)?;
            dtype_is(&pname, &pv, Dtype::F32)?;
            shape_is(&pname, &pv, &[n, c])?;
            stages.push(StageTrace {
                name: info.name.clone(),
                cost: info.cost,
                feature_dim: info.feature_dim,
                features: read_f32(fv.data()),
                probs: read_f32(pv.data()),
            });
        }
        let meta = TraceMeta {
            dataset: header.dataset,
            split: header.split,
            cascade: header.cascade,
            cost_unit: header.cost_unit,
            num_classes: c,
        };
        validate_content(&meta, &stages, &labels).map_err(err)?;
        let mut r = Self::from_parts(meta, stages, labels);
        if let Some(names) = header.class_names {
            if names.len() != c {
                return Err(err(format!(
                    "the header has {} class_names for {c} classes",
                    names.len()
                )));
            }
            r.class_names = Some(names);
        }
        if let Some(want) = &header.content_sha256 {
            if !want.eq_ignore_ascii_case(&r.content_sha256) {
                return Err(err(format!(
                    "content hash mismatch: the header says content_sha256 {want}, the tensors hash to {} (the file changed after it was written)",
                    r.content_sha256
                )));
            }
        }
        Ok(r)
    }
}

fn read_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_labels(v: &TensorView<'_>) -> std::result::Result<Vec<u32>, String> {
    let b = v.data();
    let wide: Vec<i128> = match v.dtype() {
        Dtype::U8 => b.iter().map(|&x| x as i128).collect(),
        Dtype::U16 => b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i128)
            .collect(),
        Dtype::U32 => b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128)
            .collect(),
        Dtype::I32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i128)
            .collect(),
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunks of 8")) as i128)
            .collect(),
        Dtype::U64 => b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")) as i128)
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?}, expected an integer type (I64, I32, U8, U16, U32 or U64)"
            ))
        }
    };
    wide.into_iter()
        .enumerate()
        .map(|(i, y)| {
            u32::try_from(y).map_err(|_| format!("sample {i} has label {y}, not a class index"))
        })
        .collect()
}
