//! The GGUF container, version 3 (ggml's file format, read by llama.cpp and ollama): a header of
//! typed key–value pairs, a table of tensors (name, dimensions innermost first, ggml type, offset)
//! and the tensors' bytes, each aligned to `general.alignment` (32 by default).
//! All numbers are little-endian.

use crate::error::{GgufError, Result};
use crate::quant::GgmlType;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value. Arrays hold one element type (named separately so an empty array still
/// has one).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// GGUF's value type tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    Str = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_u32(t: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match t {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => Str,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::Str,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }
    pub fn strings(items: impl IntoIterator<Item = String>) -> Value {
        Value::Array(ValueType::Str, items.into_iter().map(Value::Str).collect())
    }
    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array(ValueType::I32, items.into_iter().map(Value::I32).collect())
    }
    pub fn f32s(items: impl IntoIterator<Item = f32>) -> Value {
        Value::Array(ValueType::F32, items.into_iter().map(Value::F32).collect())
    }

    fn write(&self, w: &mut Vec<u8>) {
        match self {
            Value::U8(v) => w.push(*v),
            Value::I8(v) => w.push(*v as u8),
            Value::U16(v) => w.extend(v.to_le_bytes()),
            Value::I16(v) => w.extend(v.to_le_bytes()),
            Value::U32(v) => w.extend(v.to_le_bytes()),
            Value::I32(v) => w.extend(v.to_le_bytes()),
            Value::F32(v) => w.extend(v.to_le_bytes()),
            Value::Bool(v) => w.push(*v as u8),
            Value::Str(s) => write_str(w, s),
            Value::Array(t, items) => {
                w.extend((*t as u32).to_le_bytes());
                w.extend((items.len() as u64).to_le_bytes());
                for it in items {
                    debug_assert_eq!(it.value_type(), *t, "GGUF arrays hold one type");
                    it.write(w);
                }
            }
            Value::U64(v) => w.extend(v.to_le_bytes()),
            Value::I64(v) => w.extend(v.to_le_bytes()),
            Value::F64(v) => w.extend(v.to_le_bytes()),
        }
    }
}

fn write_str(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

/// One tensor to write: `dims` innermost first (a Hugging Face `[out, in]` matrix is
/// `[in, out]` here), `data` already in `ty`'s encoding, rows of `dims[0]` values.
pub struct TensorOut {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// A GGUF file being assembled in memory, written in one go.
#[derive(Default)]
pub struct Writer {
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorOut>,
}

fn align(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

impl Writer {
    pub fn set(&mut self, key: &str, v: Value) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.kv.push((key.to_string(), v)),
        }
    }

    /// Header, metadata and tensor table, padded to the alignment: everything before the data.
    fn header(&self) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend(MAGIC);
        w.extend(VERSION.to_le_bytes());
        w.extend((self.tensors.len() as u64).to_le_bytes());
        w.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            write_str(&mut w, k);
            w.extend((v.value_type() as u32).to_le_bytes());
            v.write(&mut w);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            write_str(&mut w, &t.name);
            w.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                w.extend(d.to_le_bytes());
            }
            w.extend(t.ty.id().to_le_bytes());
            w.extend((offset as u64).to_le_bytes());
            offset = align(offset + t.data.len(), DEFAULT_ALIGNMENT);
        }
        w.resize(align(w.len(), DEFAULT_ALIGNMENT), 0);
        w
    }

    /// Writes the file under a temporary name, fsyncs and renames it into place: a crash leaves
    /// the old file or the new one, never half of one.
    pub fn write(&self, path: &Path) -> Result<()> {
        for t in &self.tensors {
            let n: u64 = t.dims.iter().product();
            let want = t.ty.row_bytes(n as usize).unwrap_or(usize::MAX);
            assert_eq!(
                want,
                t.data.len(),
                "tensor {} has the wrong byte count",
                t.name
            );
        }
        let tmp = cria_core::fsutil::tmp_name(path);
        let res = (|| -> std::io::Result<()> {
            let f = std::fs::File::create(&tmp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
            out.write_all(&self.header())?;
            let zeros = [0u8; DEFAULT_ALIGNMENT];
            for t in &self.tensors {
                out.write_all(&t.data)?;
                let pad = align(t.data.len(), DEFAULT_ALIGNMENT) - t.data.len();
                out.write_all(&zeros[..pad])?;
            }
            let f = out.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            cria_core::fsutil::sync_dir(path.parent().unwrap_or(Path::new(".")))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(|e| GgufError::io(path, e))
    }
}

/// A tensor's entry in a file's table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Innermost first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A GGUF file mapped into memory: metadata parsed, tensors read in place.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    map: memmap2::Mmap,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.b.len().saturating_sub(self.pos) < n {
            return Err(GgufError::format(
                self.path,
                format!("the file ends inside {what} (byte {})", self.pos),
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len())
            .ok_or_else(|| {
                GgufError::format(self.path, format!("{what}: a string of {n} bytes"))
            })?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufError::format(self.path, format!("{what} is not UTF-8")))
    }
    fn value(&mut self, t: ValueType, what: &str, depth: usize) -> Result<Value> {
        let mut fixed = |n: usize| self.take(n, what).map(|b| b.to_vec());
        Ok(match t {
            ValueType::U8 => Value::U8(fixed(1)?[0]),
            ValueType::I8 => Value::I8(fixed(1)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(fixed(2)?.try_into().unwrap())),
            ValueType::I16 => Value::I16(i16::from_le_bytes(fixed(2)?.try_into().unwrap())),
            ValueType::U32 => Value::U32(u32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            ValueType::I32 => Value::I32(i32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            ValueType::F32 => Value::F32(f32::from_le_bytes(fixed(4)?.try_into().unwrap())),
            ValueType::Bool => Value::Bool(fixed(1)?[0] != 0),
            ValueType::U64 => Value::U64(u64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            ValueType::I64 => Value::I64(i64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            ValueType::F64 => Value::F64(f64::from_le_bytes(fixed(8)?.try_into().unwrap())),
            ValueType::Str => Value::Str(self.string(what)?),
            ValueType::Array => {
                if depth > 2 {
                    return Err(GgufError::format(
                        self.path,
                        format!("{what}: arrays nested too deep"),
                    ));
                }
                let raw = self.u32(what)?;
                let et = ValueType::from_u32(raw).ok_or_else(|| {
                    GgufError::format(
                        self.path,
                        format!("{what}: unknown array element type {raw}"),
                    )
                })?;
                let n = self.u64(what)?;
                if n as usize > self.b.len() - self.pos {
                    return Err(GgufError::format(
                        self.path,
                        format!("{what}: an array of {n} elements cannot fit the file"),
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, what, depth + 1)?);
                }
                Value::Array(et, items)
            }
        })
    }
}

impl GgufFile {
    /// Maps and parses `path`; tensors stay on disk until read.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| GgufError::io(path, e))?;
        // SAFETY: read-only map. cria never rewrites a GGUF in place (it writes a new file and
        // renames it); another program truncating the file under us is outside what any
        // mmap-based reader (llama.cpp's included) can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        let mut c = Cursor {
            b: &map,
            pos: 0,
            path,
        };
        if c.take(4, "the magic number")? != MAGIC {
            return Err(GgufError::format(path, "it does not start with \"GGUF\""));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::format(
                path,
                format!("GGUF version {version}; cria reads versions 2 and 3"),
            ));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        let mut kv = Vec::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let raw = c.u32(&key)?;
            let t = ValueType::from_u32(raw).ok_or_else(|| {
                GgufError::format(path, format!("metadata {key}: unknown value type {raw}"))
            })?;
            let v = c.value(t, &format!("metadata {key}"), 0)?;
            kv.push((key, v));
        }
        let mut tensors = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i}'s name"))?;
            let nd = c.u32(&name)?;
            if nd == 0 || nd > 4 {
                return Err(GgufError::format(
                    path,
                    format!("tensor {name}: {nd} dimensions"),
                ));
            }
            let dims = (0..nd).map(|_| c.u64(&name)).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = kv
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .map_or(DEFAULT_ALIGNMENT, |a| a as usize);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::format(
                path,
                format!("general.alignment {alignment}"),
            ));
        }
        let data_start = align(c.pos, alignment);
        let f = GgufFile {
            path: path.to_path_buf(),
            version,
            kv,
            tensors,
            data_start,
            map,
        };
        for t in &f.tensors {
            let bytes = t.ty.row_bytes(t.len()).ok_or_else(|| {
                GgufError::format(
                    path,
                    format!(
                        "tensor {}: {} values do not fill whole blocks of {:?}",
                        t.name,
                        t.len(),
                        t.ty
                    ),
                )
            });
            let end = bytes.map(|b| f.data_start as u64 + t.offset + b as u64)?;
            if end > f.map.len() as u64 {
                return Err(GgufError::format(
                    path,
                    format!(
                        "tensor {} ends at byte {end}, past the end of the file ({} bytes)",
                        t.name,
                        f.map.len()
                    ),
                ));
            }
        }
        Ok(f)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor in its ggml encoding, in place in the mapped file.
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset as usize;
        let n = t.ty.row_bytes(t.len()).expect("checked at open");
        &self.map[start..start + n]
    }

    /// Hands a tensor's mapped pages back to the page cache (after it was copied, repacked,
    /// elsewhere): the process's resident memory drops by its size, and a later read of its
    /// bytes maps them in again from the unchanged file.
    pub fn release(&self, t: &TensorInfo) {
        let start = self.data_start + t.offset as usize;
        let n = t.ty.row_bytes(t.len()).expect("checked at open");
        #[cfg(unix)]
        // SAFETY: the mapping is read-only and shared with an unchanged file, so dropping its
        // pages changes no byte anyone reads; a failure only leaves the pages resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, n)
        };
    }

    /// The whole mapped file (for tests comparing bytes).
    pub fn raw(&self) -> &[u8] {
        &self.map
    }
}
