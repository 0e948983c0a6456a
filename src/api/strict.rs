//! The field types of request bodies that say in the OpenAPI document what
//! the handler checks. `StrictString` refuses other JSON types (poem-openapi's
//! `String` quietly turns `7` or `true` into text; the contract answers 422
//! for a wrong type) and states its `FieldRule`: the expressions and length
//! of `sources::names`, which the handler checks with the same `TextRule`.
//! `NonEmptyList` states `minItems: 1`. Both parse whatever has the right
//! JSON type, so the handler answers a broken rule with its own code and a
//! sentence (`INVALID_URL`, `INVALID_MODEL_TAG`, …), not a parser's dump.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

use crate::sources::names::{self, TextRule};

/// The rule a `StrictString` field follows, as the document states it.
pub trait FieldRule: Send + Sync + 'static {
    /// `None`: any text.
    fn rule() -> Option<&'static TextRule>;
}

/// Any text at all.
pub struct AnyText;

impl FieldRule for AnyText {
    fn rule() -> Option<&'static TextRule> {
        None
    }
}

/// Declares field rules that name a rule of `sources::names`.
macro_rules! field_rules {
    ($($(#[$doc:meta])* $name:ident => $rule:path;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl FieldRule for $name {
            fn rule() -> Option<&'static TextRule> {
                Some(&$rule)
            }
        }
    )*};
}

field_rules! {
    /// A GitHub login.
    GitHubOwner => names::GITHUB_OWNER;
    /// A GitHub repository name.
    GitHubRepoName => names::GITHUB_REPO_NAME;
    /// A Hugging Face repo id.
    HfRepoIdText => names::HF_REPO_ID;
    /// A branch, tag or commit; empty means `main`.
    Revision => names::REVISION;
    /// One glob of `allow_patterns`.
    FileGlob => names::FILE_GLOB;
}

/// A string that must be sent as a JSON string, following the rule `R`.
pub struct StrictString<R: FieldRule = AnyText>(pub String, PhantomData<R>);

impl<R: FieldRule> StrictString<R> {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into(), PhantomData)
    }
}

impl<R: FieldRule> Deref for StrictString<R> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<R: FieldRule> Clone for StrictString<R> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<R: FieldRule> fmt::Debug for StrictString<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<R: FieldRule> PartialEq for StrictString<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<R: FieldRule> Eq for StrictString<R> {}

impl<R: FieldRule> Type for StrictString<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    /// The rule's first expression is the `pattern`; the others, which
    /// JSON Schema cannot put in the same object, go in `allOf`.
    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        if let Some(rule) = R::rule() {
            let mut patterns = rule.patterns().iter();
            schema.pattern = patterns.next().map(|p| p.to_string());
            schema.all_of = patterns
                .map(|p| {
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        pattern: Some(p.to_string()),
                        ..MetaSchema::new("string")
                    }))
                })
                .collect();
            schema.max_length = rule.max_length();
        }
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<R: FieldRule> ParseFromJSON for StrictString<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(text)) => Ok(Self::new(text)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl<R: FieldRule> ToJSON for StrictString<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A JSON array that the document says holds at least one item. An empty
/// one parses: the handler refuses it with a sentence of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmptyList<T>(pub Vec<T>);

impl<T: Type> Type for NonEmptyList<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = T::RawValueType;

    fn name() -> Cow<'static, str> {
        Vec::<T>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(T::schema_ref())),
            min_items: Some(1),
            ..MetaSchema::new("array")
        }))
    }

    fn register(registry: &mut Registry) {
        Vec::<T>::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.0.iter().filter_map(Type::as_raw_value))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for NonEmptyList<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Vec::<T>::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

impl<T: ToJSON> ToJSON for NonEmptyList<T> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}
