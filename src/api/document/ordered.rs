//! JSON whose objects keep their keys in the order they were written.
//! serde_json's `Value` sorts them (its `preserve_order` feature is off in
//! this tree), which would reorder the document's paths, methods and
//! properties that poem-openapi writes in declaration order, and with them
//! Swagger UI's page and generated clients' fields.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Number, Value};

/// A JSON value; an object is its entries in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a JSON pointer (RFC 6901), e.g. `/responses/201`.
    pub fn pointer_mut(&mut self, pointer: &str) -> Option<&mut Json> {
        pointer
            .strip_prefix('/')?
            .split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .try_fold(self, |value, key| value.get_mut(&key))
    }

    /// Sets `key`, in place when the object has it, else at the end.
    pub fn insert(&mut self, key: &str, value: Json) {
        let Json::Object(entries) = self else {
            panic!("'{key}' can only be set on an object");
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = value,
            None => entries.push((key.to_string(), value)),
        }
    }

    /// The object's values, or nothing for another value.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Json> {
        let entries = match self {
            Json::Object(entries) => entries.as_mut_slice(),
            _ => &mut [],
        };
        entries.iter_mut().map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn take(&mut self) -> Json {
        std::mem::replace(self, Json::Null)
    }
}

/// From `serde_json::json!`: the keys of its objects come sorted.
impl From<Value> for Json {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(b),
            Value::Number(n) => Json::Number(n),
            Value::String(s) => Json::String(s),
            Value::Array(items) => Json::Array(items.into_iter().map(Json::from).collect()),
            Value::Object(map) => {
                Json::Object(map.into_iter().map(|(k, v)| (k, Json::from(v))).collect())
            }
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => items.serialize(serializer),
            Json::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
        Ok(Number::from_f64(n).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_through_a_round_trip() {
        let text = r#"{"z":1,"a":{"y":[true,null,"s",-2,1.5],"b":{}},"m~/":"x"}"#;
        let mut json: Json = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), text);
        json.pointer_mut("/a/b")
            .unwrap()
            .insert("k", Json::Bool(false));
        json.insert("z", Json::Null);
        assert_eq!(
            json.pointer_mut("/m~0~1").unwrap().as_str(),
            Some("x"),
            "~0 and ~1 stand for ~ and /"
        );
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"z":null,"a":{"y":[true,null,"s",-2,1.5],"b":{"k":false}},"m~/":"x"}"#
        );
    }
}
