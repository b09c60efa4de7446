//! Wire pieces shared by the chat and legacy completion APIs: the constant `object` tags, `stop`,
//! `stream_options`, `usage`, `finish_reason` and the serializer that keeps logprobs finite.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_STOP;

/// What a non-finite logprob is written as: JSON has no `-Infinity`, serde_json would write
/// `null` (which the schema and clients do not expect), and OpenAI itself uses this floor.
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// Declares a one-value enum that (de)serializes as a fixed string, so constant fields such as
/// `"object": "chat.completion"` are typed, default correctly and show as `const` in the schema.
macro_rules! constant_tag {
    ($(#[$doc:meta])* $name:ident = $value:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema,
        )]
        #[schemars(inline)]
        pub enum $name {
            #[default]
            #[serde(rename = $value)]
            Value,
        }

        impl $name {
            /// The wire string.
            pub const fn as_str(self) -> &'static str {
                $value
            }
        }
    };
}

/// Implements `Deserialize` and `Serialize` for a request struct whose derives carry
/// `#[serde(remote = "Self")]`, so that it reads only from a JSON object (see [`MapOnly`]).
macro_rules! json_object {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <$ty>::deserialize($crate::common::MapOnly(deserializer))
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    };
}
pub(crate) use json_object;

/// Implements `as_str` and a `Deserialize` that reads only a JSON string for a unit-only enum
/// (its `Serialize` and `JsonSchema` stay derived): serde's derived enums also accept the
/// externally tagged object form (`{"user": null}`), which OpenAI's API does not.
macro_rules! string_enum {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                match name.as_ref() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, NAMES)),
                }
            }
        }
    };
}
pub(crate) use string_enum;

/// Hands a derived struct's `deserialize_struct` on as `deserialize_map`. serde's derived
/// structs also accept a JSON array (fields by position); OpenAI's objects are objects, and a
/// request that sends `"stream_options": [true]` must be refused as the schema says.
#[derive(Debug)]
pub(crate) struct MapOnly<D>(pub(crate) D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

constant_tag!(
    /// `"object": "chat.completion"`.
    ChatCompletionObject = "chat.completion"
);
constant_tag!(
    /// `"object": "chat.completion.chunk"`.
    ChatCompletionChunkObject = "chat.completion.chunk"
);
constant_tag!(
    /// `"object": "text_completion"` (legacy completions, streamed or not).
    TextCompletionObject = "text_completion"
);
constant_tag!(
    /// `"object": "model"`.
    ModelObject = "model"
);
constant_tag!(
    /// `"object": "list"`.
    ListObject = "list"
);
constant_tag!(
    /// `"role": "assistant"` in responses, the only role a response carries.
    AssistantRole = "assistant"
);
constant_tag!(
    /// `"type": "function"`, the only kind of tool.
    FunctionType = "function"
);

/// `stop`: one string or an array of up to [`MAX_STOP`] strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list, whichever form was sent.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

// Hand-written rather than `untagged`: untagged enums buffer the value and lose both the error
// path and any useful message ("data did not match any variant").
impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StopVisitor;

        impl<'de> Visitor<'de> for StopVisitor {
            type Value = Stop;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Stop, E> {
                Ok(Stop::One(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Stop, E> {
                Ok(Stop::One(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Stop::Many(out))
            }
        }

        deserializer.deserialize_any(StopVisitor)
    }
}

impl JsonSchema for Stop {
    fn schema_name() -> Cow<'static, str> {
        "Stop".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Up to 4 non-empty sequences where generation stops; the stop sequence itself is not returned.",
            "anyOf": [
                { "type": "string", "minLength": 1 },
                {
                    "type": "array",
                    "items": { "type": "string", "minLength": 1 },
                    "maxItems": MAX_STOP
                }
            ]
        })
    }
}

/// `stream_options`; only allowed when `stream` is true.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
#[schemars(rename = "StreamOptions")]
pub struct StreamOptions {
    /// Send a last chunk with `usage` for the whole request and an empty `choices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Accepted and ignored: Kiln never pads chunks with obfuscation text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_obfuscation: Option<bool>,
}

json_object!(StreamOptions);

/// Token counts for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    /// Usage with `total_tokens` computed.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// Why a choice stopped. Kiln has no content filter, so only these three occur.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
    /// The answer is one or more tool calls (chat only).
    ToolCalls,
}

/// An integral `f64` as `i64`: JSON Schema counts `16.0` and `1e3` as integers, so they must
/// read as such. Only up to 2^53 in magnitude, though: beyond it a float may be the rounding of
/// another number (serde_json reads an integer literal outside `i64`/`u64`, such as
/// `-9223372036854775809`, as the nearest `f64`, which is exactly `i64::MIN`), and accepting it
/// would let an out-of-range value through as an in-range one.
pub(crate) fn integral(v: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (v.fract() == 0.0 && (-EXACT..=EXACT).contains(&v)).then_some(v as i64)
}

/// Reads an optional integer field, accepting integral floats (see [`integral`]).
pub(crate) fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct IntVisitor;

    impl<'de> Visitor<'de> for IntVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            integral(v)
                .map(Some)
                .ok_or_else(|| E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }

    deserializer.deserialize_option(IntVisitor)
}

/// The value actually written for a logprob.
pub(crate) fn finite_logprob(v: f32) -> f32 {
    if v.is_finite() { v } else { LOGPROB_FLOOR }
}

pub(crate) fn ser_logprob<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f32(finite_logprob(*v))
}

pub(crate) fn ser_opt_logprobs<S: Serializer>(v: &[Option<f32>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.map(finite_logprob)))
}
