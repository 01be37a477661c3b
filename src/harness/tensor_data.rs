//! Tensors as JSON: `{ "shape": [...], "dtype": "f32", "values": [...] }`, values row-major.
//! Floats are written in their shortest round-trip form at their own precision (f32 for
//! f32/bf16/f16), so a file reads back bit-exact; non-finite floats are the strings "NaN",
//! "Infinity" and "-Infinity", since JSON has no token for them.

use dtensor::local;
use dtensor::DType;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub values: Values,
}

impl TensorData {
    /// Reads a tensor (any device) into plain values.
    pub(crate) fn from_tensor(t: &Tensor) -> TensorData {
        let dtype = local::dtype(t.kind());
        let shape = local::shape(t);
        let flat = t.to_device(Device::Cpu).contiguous().view(-1);
        let values = match dtype {
            DType::Bool => Values::Bool(Vec::<bool>::try_from(&flat).expect("bool tensor")),
            DType::I64 | DType::I32 => {
                Values::Int(Vec::<i64>::try_from(&flat.to_kind(Kind::Int64)).expect("int tensor"))
            }
            _ => Values::Float(Vec::<f64>::try_from(&flat.to_kind(Kind::Double)).expect("float tensor")),
        };
        TensorData { shape, dtype, values }
    }

    /// Builds the tensor on `device`. Float values are rounded to the dtype (exactly, when the
    /// file was written by shardfuzz).
    pub fn to_tensor(&self, device: Device) -> Tensor {
        let shape = local::i64s(&self.shape);
        let t = match &self.values {
            Values::Float(v) => {
                let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                Tensor::from_slice(&f).to_kind(local::kind(self.dtype))
            }
            Values::Int(v) => Tensor::from_slice(v).to_kind(local::kind(self.dtype)),
            Values::Bool(v) => Tensor::from_slice(v),
        };
        t.reshape(&shape).to_device(device)
    }

    /// Checks values against shape and dtype; `what` names the field in the message.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        let Some(n) = super::limits::product(&self.shape) else {
            return Err(format!("{what}.shape: {:?} has more elements than 64 bits count", self.shape));
        };
        if self.values.len() as u64 != n {
            return Err(format!("{what}.values: shape {:?} needs {n} values, found {}", self.shape, self.values.len()));
        }
        let ok = matches!(
            (&self.values, self.dtype),
            (Values::Float(_), DType::F32 | DType::F64 | DType::BF16 | DType::F16)
                | (Values::Int(_), DType::I64 | DType::I32)
                | (Values::Bool(_), DType::Bool)
        );
        if !ok {
            return Err(format!("{what}.values: values do not fit dtype {}", self.dtype));
        }
        Ok(())
    }
}

/// Serializes values the way their dtype wants them written.
pub(crate) struct ValuesAs<'a>(pub &'a Values, pub DType);

impl Serialize for ValuesAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Values::Float(v) => FloatsAs(v, self.1 != DType::F64).serialize(s),
            Values::Int(v) => v.serialize(s),
            Values::Bool(v) => v.serialize(s),
        }
    }
}

struct FloatsAs<'a>(&'a [f64], bool);

impl Serialize for FloatsAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &x in self.0 {
            if x.is_nan() {
                seq.serialize_element("NaN")?;
            } else if x.is_infinite() {
                seq.serialize_element(if x > 0.0 { "Infinity" } else { "-Infinity" })?;
            } else if self.1 {
                seq.serialize_element(&(x as f32))?;
            } else {
                seq.serialize_element(&x)?;
            }
        }
        seq.end()
    }
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TensorData", 3)?;
        st.serialize_field("shape", &self.shape)?;
        st.serialize_field("dtype", &self.dtype)?;
        st.serialize_field("values", &ValuesAs(&self.values, self.dtype))?;
        st.end()
    }
}

/// One JSON value of a `values` array, before the dtype says what it must be.
pub(crate) enum Raw {
    Num(f64),
    Int(i64),
    Bool(bool),
}

/// A `values` array as read, before its dtype is known.
pub(crate) struct RawSeq(Vec<Raw>);

impl RawSeq {
    /// Converts to the values of `dtype`, or says why they do not fit.
    pub(crate) fn into_values(self, dtype: DType) -> Result<Values, String> {
        let raw = self.0;
        Ok(match dtype {
            DType::Bool => Values::Bool(
                raw.into_iter()
                    .map(|r| match r {
                        Raw::Bool(b) => Ok(b),
                        Raw::Int(0) => Ok(false),
                        Raw::Int(1) => Ok(true),
                        _ => Err("bool tensor values must be true or false".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::I64 | DType::I32 => Values::Int(
                raw.into_iter()
                    .map(|r| match r {
                        Raw::Int(i) => Ok(i),
                        _ => Err("integer tensor values must be integers".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => Values::Float(
                raw.into_iter()
                    .map(|r| match r {
                        Raw::Num(x) => Ok(x),
                        Raw::Int(i) => Ok(i as f64),
                        Raw::Bool(_) => Err("float tensor values must be numbers".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

impl<'de> Deserialize<'de> for RawSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSeq;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of numbers, booleans, or \"NaN\"/\"Infinity\"/\"-Infinity\"")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RawSeq, A::Error> {
                let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(e) = a.next_element::<RawElem>()? {
                    out.push(e.0);
                }
                Ok(RawSeq(out))
            }
        }
        d.deserialize_seq(V)
    }
}

struct RawElem(Raw);

impl<'de> Deserialize<'de> for RawElem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawElem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a boolean, or \"NaN\"/\"Infinity\"/\"-Infinity\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawElem, E> {
                Ok(RawElem(Raw::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawElem, E> {
                Ok(RawElem(Raw::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawElem, E> {
                i64::try_from(v)
                    .map(|v| RawElem(Raw::Int(v)))
                    .map_err(|_| E::custom(format!("integer {v} out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawElem, E> {
                Ok(RawElem(Raw::Num(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawElem, E> {
                match v {
                    "NaN" => Ok(RawElem(Raw::Num(f64::NAN))),
                    "Infinity" => Ok(RawElem(Raw::Num(f64::INFINITY))),
                    "-Infinity" => Ok(RawElem(Raw::Num(f64::NEG_INFINITY))),
                    _ => Err(E::custom(format!(
                        "unexpected string \"{v}\" (only \"NaN\", \"Infinity\" and \"-Infinity\" are allowed)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            shape: Vec<usize>,
            dtype: DType,
            values: RawSeq,
        }
        let w = Wire::deserialize(d)?;
        let values = w.values.into_values(w.dtype).map_err(de::Error::custom)?;
        Ok(TensorData { shape: w.shape, dtype: w.dtype, values })
    }
}

/// A JSON object whose keys keep their order (outputs print in the order their subject gives them).
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn get(&self, k: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered<T>, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, T>()? {
                    v.push((k, x));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A case's input tensors by name (`data.tensors`), in the subject's order.
pub type Tensors = Ordered<TensorData>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_bit_exact_and_non_finite_as_strings() {
        let t = TensorData {
            shape: vec![5],
            dtype: DType::F32,
            values: Values::Float(vec![0.1f32 as f64, -1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, r#"{"shape":[5],"dtype":"f32","values":[0.1,-1.5,"NaN","Infinity","-Infinity"]}"#);
        let back: TensorData = serde_json::from_str(&s).unwrap();
        match back.values {
            Values::Float(v) => {
                assert_eq!((v[0] as f32).to_bits(), 0.1f32.to_bits());
                assert!(v[2].is_nan() && v[3] == f64::INFINITY && v[4] == f64::NEG_INFINITY);
            }
            _ => panic!("floats"),
        }
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(serde_json::from_str::<TensorData>(r#"{"shape":[1],"dtype":"f32","values":["nan"]}"#).is_err());
        assert!(serde_json::from_str::<TensorData>(r#"{"shape":[1],"dtype":"bool","values":[0.5]}"#).is_err());
        assert!(serde_json::from_str::<TensorData>(r#"{"shape":[1],"dtype":"f32","values":[1],"x":1}"#).is_err());
        let t: TensorData = serde_json::from_str(r#"{"shape":[2],"dtype":"f32","values":[1]}"#).unwrap();
        assert!(t.validate("tensors.x").unwrap_err().contains("needs 2 values"));
    }
}
