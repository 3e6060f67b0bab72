//! `settings!`: one declaration per setting, from which come its CLI flag (`--node-id`), its
//! environment variable (`CHRONIK_NODE_ID`), its TOML key (`node-id`), its default and the
//! `--help` line that shows that default.
//!
//! ```ignore
//! settings! {
//!     pub struct BrokerSettings => BrokerValues;
//!     /// This broker's id.
//!     node_id: i32 = "1";
//!     /// Address advertised to clients.
//!     advertise: String = ["the listen address"];
//!     /// Retention, ms (-1 = forever).
//!     log_retention_ms: i64 = "604800000", arg(allow_negative_numbers = true);
//! }
//! ```
//!
//! A default is either a literal, parsed as the setting's type (what `--help` and README show),
//! or `["text"]`: no fixed value, the resolution code works it out, and the text says how.
//!
//! The macro makes two structs:
//! - `BrokerSettings` (clap `Args` and serde `Deserialize` both): every field `Option<T>`, what
//!   the flags and environment gave, or (the same struct) what the TOML file gave; `or` layers
//!   them, so precedence is flag > environment (clap) > file > default.
//! - `BrokerValues`: the same fields after the defaults (`T`, or `Option<T>` for a `[text]`
//!   default), for the resolution code to check and convert.

/// The `--help` text of a setting: its doc lines joined, then `[default: …]`.
pub fn help(doc: &[&str], default: &str) -> String {
    let text = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    format!("{text} [default: {default}]")
}

/// A setting's literal default as its type. The literals are written in `settings.rs`, never
/// read from outside; a unit test parses every one, so a bad literal fails the tests, not a start.
pub fn parse_default<T: std::str::FromStr>(name: &str, text: &str) -> T {
    match text.parse() {
        Ok(v) => v,
        Err(_) => panic!("settings.rs: the default of {name} (`{text}`) does not parse"),
    }
}

/// One declared setting, for the README and `--help` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The field name, snake_case (the flag is this in kebab-case).
    pub name: &'static str,
    /// What `--help` and README show as the default.
    pub default: &'static str,
}

/// `[text]` or a literal → the default's text.
macro_rules! default_text {
    ([$text:literal]) => {
        $text
    };
    ($lit:literal) => {
        $lit
    };
}

/// The type a setting has after the defaults: `Option<T>` when the default is worked out later.
macro_rules! value_type {
    ($ty:ty, [$text:literal]) => {
        Option<$ty>
    };
    ($ty:ty, $lit:literal) => {
        $ty
    };
}

/// A given value, else the default.
macro_rules! value_or_default {
    ($name:ident, $given:expr, $ty:ty, [$text:literal]) => {
        $given
    };
    ($name:ident, $given:expr, $ty:ty, $lit:literal) => {
        match $given {
            Some(v) => v,
            None => $crate::config::declare::parse_default::<$ty>(stringify!($name), $lit),
        }
    };
}

macro_rules! settings {
    (
        $(#[$smeta:meta])*
        pub struct $Given:ident => $Values:ident;
        $(
            $(#[doc = $doc:literal])+
            $name:ident : $ty:ty = $dflt:tt $(, arg($($arg:tt)*))? ;
        )+
    ) => {
        /// What the flags and environment (or the TOML file) gave; `None`: not given.
        #[derive(clap::Args, serde::Deserialize, Debug, Clone, Default, PartialEq)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        $(#[$smeta])*
        pub struct $Given {
            $(
                #[arg(
                    long,
                    env = const_format::map_ascii_case!(
                        const_format::Case::Upper,
                        concat!("CHRONIK_", stringify!($name))
                    ),
                    help = $crate::config::declare::help(
                        &[$($doc),+],
                        $crate::config::declare::default_text!($dflt),
                    )
                    $(, $($arg)*)?
                )]
                pub $name: Option<$ty>,
            )+
        }

        /// The settings after their defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct $Values {
            $(
                $(#[doc = $doc])+
                pub $name: $crate::config::declare::value_type!($ty, $dflt),
            )+
        }

        impl $Given {
            /// Every setting of this group with its default's text, in declaration order.
            pub const DECLARED: &'static [$crate::config::declare::Declared] = &[$(
                $crate::config::declare::Declared {
                    name: stringify!($name),
                    default: $crate::config::declare::default_text!($dflt),
                },
            )+];

            /// Each setting as given here, else as given in `lower`.
            pub fn or(self, lower: $Given) -> $Given {
                $Given { $($name: self.$name.or(lower.$name),)+ }
            }

            /// Each setting as given, else its default.
            pub fn values(self) -> $Values {
                $Values {
                    $($name: $crate::config::declare::value_or_default!(
                        $name, self.$name, $ty, $dflt
                    ),)+
                }
            }
        }
    };
}

pub(crate) use {default_text, settings, value_or_default, value_type};
