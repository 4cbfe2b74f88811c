//! NumPy `.npy` files for the CLI: float tensors in (f16, f32, f64) and out (f32), int32 offsets
//! (`cu_seqlens`) in, 0/1 masks (block-sparse block matrices) in as bool or uint8 and out as
//! uint8. Every failure is an `Error::Io` naming the file; nothing panics.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use half::f16;
use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::error::{Error, Result};

/// A float array read from a `.npy` file, widened to f32, row-major (C order).
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

const FLOAT_DTYPES: &str = "float32, float16 or float64";
const INT_DTYPES: &str = "int32 (or int64 with values in int32 range)";
const MASK_DTYPES: &str = "bool or uint8 (0 and 1)";

/// Reads a C-order float32, float16 or float64 array (either byte order) as f32; float64 values
/// are rounded to the nearest f32.
pub fn read_f32(path: &Path) -> Result<NpyArray> {
    let file = NpyInput::open(path)?;
    let data = match file.scalar_kind() {
        Some((TypeChar::Float, 4)) => file.decode::<f32>()?,
        Some((TypeChar::Float, 2)) => file.decode::<f16>()?.into_iter().map(f16::to_f32).collect(),
        Some((TypeChar::Float, 8)) => file
            .decode::<f64>()?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        _ => return Err(file.dtype_error(FLOAT_DTYPES)),
    };
    Ok(NpyArray {
        shape: file.shape,
        data,
    })
}

/// Reads a C-order int32 array (int64 accepted when every value fits in int32): its shape and
/// its values in row-major order.
pub fn read_i32(path: &Path) -> Result<(Vec<usize>, Vec<i32>)> {
    let file = NpyInput::open(path)?;
    let data = match file.scalar_kind() {
        Some((TypeChar::Int, 4)) => file.decode::<i32>()?,
        Some((TypeChar::Int, 8)) => {
            let wide = file.decode::<i64>()?;
            let mut narrow = Vec::with_capacity(wide.len());
            for (i, &x) in wide.iter().enumerate() {
                let x = i32::try_from(x).map_err(|_| {
                    file.error(format!("int64 element {i} = {x} does not fit in int32"))
                })?;
                narrow.push(x);
            }
            narrow
        }
        _ => return Err(file.dtype_error(INT_DTYPES)),
    };
    Ok((file.shape, data))
}

/// Reads a C-order 0/1 mask, bool or uint8: its shape and its values in row-major order. A
/// uint8 value other than 0 and 1 is an error naming the element, not a silent `true`.
pub fn read_mask(path: &Path) -> Result<(Vec<usize>, Vec<bool>)> {
    let file = NpyInput::open(path)?;
    if !matches!(
        file.scalar_kind(),
        Some((TypeChar::Bool | TypeChar::Uint, 1))
    ) {
        return Err(file.dtype_error(MASK_DTYPES));
    }
    // One byte an element, so the data bytes are the values in either byte order.
    let mut mask = Vec::with_capacity(file.bytes.len() - file.data_start);
    for (i, &x) in file.bytes[file.data_start..].iter().enumerate() {
        match x {
            0 => mask.push(false),
            1 => mask.push(true),
            _ => {
                return Err(file.error(format!(
                    "element {i} = {x}: a mask holds 0 and 1 only ({})",
                    describe(&file.header.dtype())
                )))
            }
        }
    }
    Ok((file.shape, mask))
}

/// Writes `data` (row-major, `shape`'s element count) as a little-endian float32 `.npy` file,
/// replacing any file at `path`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data)
}

/// Writes a mask (row-major, `shape`'s element count) as a uint8 `.npy` file of 0 and 1,
/// replacing any file at `path`; [`read_mask`] reads it back.
pub fn write_mask(path: &Path, shape: &[usize], mask: &[bool]) -> Result<()> {
    let data: Vec<u8> = mask.iter().map(|&x| u8::from(x)).collect();
    write(path, shape, &data)
}

fn write<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if numel != Some(data.len()) {
        return Err(Error::invalid(
            "data",
            format!(
                "{} elements, but shape {shape:?} holds {numel:?}",
                data.len()
            ),
        ));
    }
    let io_error = |what: &str, e: std::io::Error| Error::io(path.display(), what, e);
    let file = File::create(path).map_err(|e| io_error("cannot create", e))?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(|e| io_error("cannot write", e))?;
    writer
        .extend(data.iter().copied())
        .map_err(|e| io_error("cannot write", e))?;
    writer.finish().map_err(|e| io_error("cannot write", e))
}

/// A `.npy` file read whole and checked: a parsed header, C order, a shape whose element count
/// fits in memory, and exactly the data bytes that shape needs.
struct NpyInput {
    path: String,
    header: NpyHeader,
    shape: Vec<usize>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// The magic string that starts every `.npy` file.
const NPY_MAGIC: &[u8] = b"\x93NUMPY";

impl NpyInput {
    fn open(path: &Path) -> Result<NpyInput> {
        let path = path.display().to_string();
        let error = |msg: String| Error::file(&path, msg);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "cannot read", e))?;
        check_preamble(&bytes).map_err(error)?;
        // npyz multiplies the shape's entries unchecked, which panics on overflow in debug
        // builds: a hostile header must give an error instead.
        let parsed = std::panic::catch_unwind(|| {
            let mut rest = &bytes[..];
            NpyHeader::from_reader(&mut rest).map(|header| (header, bytes.len() - rest.len()))
        });
        let (header, data_start) = match parsed {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(e)) => return Err(error(format!("not a valid .npy file: {e}"))),
            Err(_) => {
                return Err(error(
                    "not a valid .npy file: the shape overflows u64".to_string(),
                ))
            }
        };
        // With at most one dimension longer than 1, both orders lay the data out the same.
        let long_dims = header.shape().iter().filter(|&&d| d > 1).count();
        if header.order() == Order::Fortran && long_dims > 1 {
            return Err(error(
                "Fortran-order array, expected C order (save np.ascontiguousarray(x))".to_string(),
            ));
        }
        let shape: Option<Vec<usize>> = header
            .shape()
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect();
        let numel = shape
            .as_ref()
            .and_then(|s| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d)));
        let (Some(shape), Some(numel)) = (shape, numel) else {
            return Err(error(format!(
                "shape {:?} overflows the element count",
                header.shape()
            )));
        };
        let dtype = header.dtype();
        let have = bytes.len() - data_start;
        // Structured and object dtypes have no fixed item size; they are rejected by dtype later.
        if let Some(item) = dtype.num_bytes() {
            let want = numel.checked_mul(item);
            if want != Some(have) {
                let what = if want.is_none_or(|w| have < w) {
                    "truncated"
                } else {
                    "too long"
                };
                let want = want.map_or("more than usize holds".to_string(), |w| w.to_string());
                return Err(error(format!(
                    "{what}: {have} data bytes, but shape {shape:?} of {} needs {want}",
                    describe(&dtype)
                )));
            }
        }
        Ok(NpyInput {
            path,
            header,
            shape,
            bytes,
            data_start,
        })
    }

    fn error(&self, msg: String) -> Error {
        Error::file(&self.path, msg)
    }

    fn dtype_error(&self, expected: &str) -> Error {
        self.error(format!(
            "dtype {}, expected {expected}",
            describe(&self.header.dtype())
        ))
    }

    /// The type character and byte size of a plain (non-structured) dtype such as `<f4`.
    fn scalar_kind(&self) -> Option<(TypeChar, u64)> {
        match self.header.dtype() {
            DType::Plain(ts) => Some((ts.type_char(), ts.size_field())),
            _ => None,
        }
    }

    /// The elements as `T`, whose dtype the caller matched against the header.
    fn decode<T: npyz::Deserialize>(&self) -> Result<Vec<T>> {
        NpyFile::with_header(self.header.clone(), &self.bytes[self.data_start..])
            .into_vec::<T>()
            .map_err(|e| self.error(format!("cannot decode the data: {e}")))
    }
}

/// Checks the magic string and that the header length fits in the file, before npyz allocates
/// a buffer of the length the file claims.
fn check_preamble(bytes: &[u8]) -> std::result::Result<(), String> {
    if !bytes.starts_with(NPY_MAGIC) {
        return Err(format!(
            "not a .npy file: it does not start with \"\\x93NUMPY\" ({} bytes)",
            bytes.len()
        ));
    }
    // magic, major and minor version, then the header length: u16 in version 1, u32 later.
    let at = NPY_MAGIC.len() + 2;
    let (len, len_bytes) = match bytes.get(NPY_MAGIC.len()) {
        Some(1) => (
            bytes
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
            2,
        ),
        _ => (
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            4,
        ),
    };
    match len {
        Some(len) if at + len_bytes + len <= bytes.len() => Ok(()),
        Some(len) => Err(format!(
            "truncated header: it claims {len} bytes, the file has {}",
            bytes.len().saturating_sub(at + len_bytes)
        )),
        None => Err(format!(
            "truncated header: the file has only {} bytes",
            bytes.len()
        )),
    }
}

/// A dtype for messages: `'<i4' (int32)`.
fn describe(dtype: &DType) -> String {
    let DType::Plain(ts) = dtype else {
        return format!("structured {}", dtype.descr());
    };
    let bits = ts.size_field() * 8;
    let name = match ts.type_char() {
        TypeChar::Float => format!("float{bits}"),
        TypeChar::Int => format!("int{bits}"),
        TypeChar::Uint => format!("uint{bits}"),
        TypeChar::Complex => format!("complex{bits}"),
        TypeChar::Bool => "bool".to_string(),
        _ => return format!("'{ts}'"),
    };
    format!("'{ts}' ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("cuattn-npy-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A version-1.0 `.npy` file with header dict `dict` followed by `data`.
    fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.as_bytes().to_vec();
        // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
        while !(NPY_MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut bytes = NPY_MAGIC.to_vec();
        bytes.extend([1, 0]);
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header);
        bytes.extend(data);
        bytes
    }

    fn dict(descr: &str, fortran: bool, shape: &str) -> String {
        let order = if fortran { "True" } else { "False" };
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}")
    }

    fn io_message(e: Error) -> String {
        match e {
            Error::Io { path, msg, .. } => format!("{path}: {msg}"),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn f32_round_trip_keeps_shape_and_values() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("x.npy");
        let shape = [2, 3, 1, 5];
        let data: Vec<f32> = (0..30).map(|i| i as f32 * -0.37 + 1e-3).collect();
        write_f32(&path, &shape, &data).unwrap();
        let got = read_f32(&path).unwrap();
        assert_eq!(
            got,
            NpyArray {
                shape: shape.to_vec(),
                data
            }
        );
    }

    #[test]
    fn scalar_and_empty_arrays_round_trip() {
        let dir = TempDir::new("edge-shapes");
        let path = dir.0.join("x.npy");
        write_f32(&path, &[], &[4.5]).unwrap();
        assert_eq!(
            read_f32(&path).unwrap(),
            NpyArray {
                shape: vec![],
                data: vec![4.5]
            }
        );
        write_f32(&path, &[3, 0], &[]).unwrap();
        assert_eq!(
            read_f32(&path).unwrap(),
            NpyArray {
                shape: vec![3, 0],
                data: vec![]
            }
        );
    }

    #[test]
    fn write_rejects_data_that_does_not_fill_the_shape() {
        let dir = TempDir::new("write-mismatch");
        let e = write_f32(&dir.0.join("x.npy"), &[2, 3], &[1.0; 5]).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "data", .. }),
            "{e}"
        );
    }

    #[test]
    fn f16_input_widens_exactly() {
        let dir = TempDir::new("f16");
        let values = [0.5f32, -2.0, 65504.0, 6.1035156e-5, 0.33325195];
        let data: Vec<u8> = values
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let path = dir.file("h.npy", &npy_bytes(&dict("<f2", false, "(5,)"), &data));
        assert_eq!(
            read_f32(&path).unwrap(),
            NpyArray {
                shape: vec![5],
                data: values.to_vec()
            }
        );
    }

    #[test]
    fn f64_and_big_endian_f32_inputs_are_converted() {
        let dir = TempDir::new("f64-be");
        let data: Vec<u8> = [1.25f64, -3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let path = dir.file("d.npy", &npy_bytes(&dict("<f8", false, "(1, 2)"), &data));
        assert_eq!(read_f32(&path).unwrap().data, vec![1.25, -3.0]);
        let data: Vec<u8> = [7.5f32, -0.5]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let path = dir.file("be.npy", &npy_bytes(&dict(">f4", false, "(2,)"), &data));
        assert_eq!(read_f32(&path).unwrap().data, vec![7.5, -0.5]);
    }

    #[test]
    fn int32_and_fitting_int64_offsets_are_read() {
        let dir = TempDir::new("ints");
        let data: Vec<u8> = [0i32, 1, 18].iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = dir.file("i4.npy", &npy_bytes(&dict("<i4", false, "(3,)"), &data));
        assert_eq!(read_i32(&path).unwrap(), (vec![3], vec![0, 1, 18]));
        let data: Vec<u8> = [0i64, 7, 40].iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = dir.file("i8.npy", &npy_bytes(&dict("<i8", false, "(3,)"), &data));
        assert_eq!(read_i32(&path).unwrap(), (vec![3], vec![0, 7, 40]));
    }

    #[test]
    fn int64_beyond_int32_is_an_error_naming_the_element() {
        let dir = TempDir::new("i8-big");
        let data: Vec<u8> = [0i64, 1 << 40]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let path = dir.file("big.npy", &npy_bytes(&dict("<i8", false, "(2,)"), &data));
        let msg = io_message(read_i32(&path).unwrap_err());
        assert!(
            msg.contains("big.npy") && msg.contains("element 1"),
            "{msg}"
        );
    }

    #[test]
    fn masks_round_trip_as_uint8() {
        let dir = TempDir::new("mask-round-trip");
        let path = dir.0.join("m.npy");
        let shape = [2, 1, 3, 5];
        let mask: Vec<bool> = (0..30).map(|i| i % 3 == 0 || i % 7 == 2).collect();
        write_mask(&path, &shape, &mask).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = String::from_utf8_lossy(&bytes[..64]);
        assert!(header.contains("'|u1'"), "{header}");
        assert_eq!(read_mask(&path).unwrap(), (shape.to_vec(), mask));
        let e = write_mask(&path, &[2, 2], &[true; 3]).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "data", .. }),
            "{e}"
        );
    }

    #[test]
    fn bool_and_uint8_masks_are_read() {
        let dir = TempDir::new("masks");
        let data = [1u8, 0, 0, 1, 1, 0];
        let want = (vec![2, 3], vec![true, false, false, true, true, false]);
        for descr in ["|b1", "|u1"] {
            let path = dir.file("m.npy", &npy_bytes(&dict(descr, false, "(2, 3)"), &data));
            assert_eq!(read_mask(&path).unwrap(), want, "{descr}");
        }
    }

    #[test]
    fn mask_values_other_than_0_and_1_are_errors_naming_the_element() {
        let dir = TempDir::new("mask-values");
        let path = dir.file(
            "two.npy",
            &npy_bytes(&dict("|u1", false, "(4,)"), &[0, 1, 2, 1]),
        );
        let msg = io_message(read_mask(&path).unwrap_err());
        assert!(
            msg.contains("two.npy") && msg.contains("element 2 = 2") && msg.contains("0 and 1"),
            "{msg}"
        );
        let path = dir.file("i4.npy", &npy_bytes(&dict("<i4", false, "(2,)"), &[0; 8]));
        let msg = io_message(read_mask(&path).unwrap_err());
        assert!(
            msg.contains("int32") && msg.contains("expected bool or uint8"),
            "{msg}"
        );
        let path = dir.file("u2.npy", &npy_bytes(&dict("<u2", false, "(2,)"), &[0; 4]));
        let msg = io_message(read_mask(&path).unwrap_err());
        assert!(msg.contains("uint16"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let dir = TempDir::new("missing");
        let e = read_f32(&dir.0.join("nope.npy")).unwrap_err();
        // The operating system's error stays reachable as the source.
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(|s| s.kind()), Some(std::io::ErrorKind::NotFound));
        let msg = io_message(e);
        assert!(
            msg.contains("nope.npy") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_dtypes_name_what_was_found_and_expected() {
        let dir = TempDir::new("dtypes");
        let ints = dir.file("i.npy", &npy_bytes(&dict("<i4", false, "(2,)"), &[0; 8]));
        let msg = io_message(read_f32(&ints).unwrap_err());
        assert!(
            msg.contains("i.npy") && msg.contains("int32") && msg.contains("float32"),
            "{msg}"
        );
        let floats = dir.file("f.npy", &npy_bytes(&dict("<f4", false, "(2,)"), &[0; 8]));
        let msg = io_message(read_i32(&floats).unwrap_err());
        assert!(
            msg.contains("float32") && msg.contains("expected int32"),
            "{msg}"
        );
        let bools = dir.file("b.npy", &npy_bytes(&dict("|b1", false, "(2,)"), &[0; 2]));
        let msg = io_message(read_f32(&bools).unwrap_err());
        assert!(msg.contains("bool"), "{msg}");
        let record = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }";
        let records = dir.file("r.npy", &npy_bytes(record, &[0; 8]));
        let msg = io_message(read_f32(&records).unwrap_err());
        assert!(msg.contains("structured"), "{msg}");
    }

    #[test]
    fn fortran_order_matrices_are_rejected() {
        let dir = TempDir::new("fortran");
        let path = dir.file("f.npy", &npy_bytes(&dict("<f4", true, "(2, 2)"), &[0; 16]));
        let msg = io_message(read_f32(&path).unwrap_err());
        assert!(msg.contains("Fortran") && msg.contains("C order"), "{msg}");
        // A vector is laid out the same in either order.
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let path = dir.file("v.npy", &npy_bytes(&dict("<f4", true, "(1, 2)"), &data));
        assert_eq!(read_f32(&path).unwrap().data, vec![1.0, 2.0]);
    }

    #[test]
    fn truncated_and_overlong_data_are_rejected() {
        let dir = TempDir::new("lengths");
        let path = dir.file(
            "short.npy",
            &npy_bytes(&dict("<f4", false, "(2, 3)"), &[0; 20]),
        );
        let msg = io_message(read_f32(&path).unwrap_err());
        assert!(
            msg.contains("truncated") && msg.contains("20") && msg.contains("24"),
            "{msg}"
        );
        let path = dir.file(
            "long.npy",
            &npy_bytes(&dict("<f4", false, "(2,)"), &[0; 12]),
        );
        let msg = io_message(read_f32(&path).unwrap_err());
        assert!(msg.contains("too long"), "{msg}");
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let dir = TempDir::new("headers");
        let good = npy_bytes(&dict("<f4", false, "(2,)"), &[0; 8]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("not npy", b"hello world, not an array".to_vec()),
            ("magic only", NPY_MAGIC.to_vec()),
            ("cut in header", good[..30].to_vec()),
            ("bad version", {
                let mut b = good.clone();
                b[6] = 9;
                b
            }),
            ("huge header length", {
                let mut b = NPY_MAGIC.to_vec();
                b.extend([2, 0, 0xff, 0xff, 0xff, 0xff]);
                b
            }),
            ("not a dict", npy_bytes("[1, 2, 3]", &[])),
            (
                "missing shape",
                npy_bytes("{'descr': '<f4', 'fortran_order': False}", &[]),
            ),
            ("negative dim", npy_bytes(&dict("<f4", false, "(-1,)"), &[])),
            ("bad descr", npy_bytes(&dict("<zz", false, "(2,)"), &[0; 8])),
            (
                "overflowing shape",
                npy_bytes(
                    &dict("<f4", false, "(4294967296, 4294967296, 4294967296)"),
                    &[],
                ),
            ),
        ];
        for (name, bytes) in cases {
            let path = dir.file("bad.npy", &bytes);
            let e = read_f32(&path).expect_err(name);
            let msg = io_message(e);
            assert!(msg.contains("bad.npy"), "{name}: {msg}");
            for e in [
                read_i32(&path).expect_err(name),
                read_mask(&path).expect_err(name),
            ] {
                assert!(matches!(e, Error::Io { .. }), "{name}: {e}");
            }
        }
    }
}
