//! `named!`: an enum's variants named once, for the states, events and
//! decisions that are stored, sent and parsed by name.

/// Names an enum's variants once: `as_str`, `Display`, `FromStr` (with the
/// list of accepted names), `ALL`.
macro_rules! named {
    ($(#[$m:meta])* $ty:ident, $what:literal { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $ty { $($(#[$vm])* $v),+ }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($ty::$v),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " `{}`: expected one of {}"),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub(crate) use named;
