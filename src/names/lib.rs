//! The small closed enums that travel as strings (case files, flags, reports) are declared once,
//! with [`named_enum!`]: variants and their names, `ALL`, parsing with an error that lists the
//! choices, `Display`, serde as the name, and clap's `ValueEnum` so `--help` lists the values.

// The macros name these through `$crate`, so a crate using them needs neither as a dependency.
#[doc(hidden)]
pub use clap;
#[doc(hidden)]
pub use serde;

/// Declares an enum whose variants have fixed names:
///
/// ```
/// names::named_enum! {
///     /// Doc of the enum.
///     pub enum Fruit("fruit") { Apple = "apple", Pear = "pear" }
/// }
/// assert_eq!("pear".parse::<Fruit>().unwrap(), Fruit::Pear);
/// assert_eq!("kiwi".parse::<Fruit>().unwrap_err(), "unknown fruit 'kiwi' (expected apple or pear)");
/// ```
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in files and on the command line.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    format!("unknown {} '{}' (expected {})", $what, s, $crate::choices(&[$($text),+]))
                })
            }
        }

        $crate::serde_as_str!($name);

        impl $crate::clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<$crate::clap::builder::PossibleValue> {
                Some($crate::clap::builder::PossibleValue::new(self.name()))
            }
        }
    };
}

/// Serializes a type as its `Display` string and deserializes it through `FromStr` (whose error
/// message becomes serde's), for values that travel as short strings (`"S(1)"`, `"cuda:1"`).
#[macro_export]
macro_rules! serde_as_str {
    ($t:ty) => {
        impl $crate::serde::Serialize for $t {
            fn serialize<S: $crate::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> $crate::serde::Deserialize<'de> for $t {
            fn deserialize<D: $crate::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as $crate::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err($crate::serde::de::Error::custom)
            }
        }
    };
}

/// `a`, `a or b`, `a, b or c`: the choices in an error message.
pub fn choices(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    crate::named_enum! {
        enum Color("color") { Red = "red", DarkBlue = "dark_blue" }
    }

    #[test]
    fn names_parse_print_and_serialize() {
        for c in Color::ALL {
            assert_eq!(c.name().parse::<Color>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{}\"", c.name()));
        }
        assert_eq!(Color::DarkBlue.to_string(), "dark_blue");
        assert_eq!("blue".parse::<Color>().unwrap_err(), "unknown color 'blue' (expected red or dark_blue)");
        let e = serde_json::from_str::<Color>("\"green\"").unwrap_err().to_string();
        assert!(e.contains("unknown color 'green'"), "{e}");
        assert_eq!(super::choices(&["a", "b", "c"]), "a, b or c");
    }
}
