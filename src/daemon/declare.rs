//! `status_group!`: a group of the status report, declared once. Each field has one line:
//! its name (the same in `status --json`, in the `status` text and in the metric's source),
//! its doc (what it counts), where its value is read from, and the metric sample that exports
//! it. The group's struct, the code that reads it, and the field list that the metrics and
//! the text printer walk are all generated from that line.

/// A counter's value now, as the groups' read expressions take it.
pub fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// One field of a status group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Its doc comment.
    pub doc: &'static str,
    /// The metric family that exports it, and its label value (`""` when the family has no
    /// label). `None`: the field is not a metric (`counters::STATUS_ONLY` says why).
    pub metric: Option<(&'static str, &'static str)>,
}

/// What the metrics and the text printer know of a group.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    /// Its JSON pointer in the status report (`""` for fields at the top level).
    pub at: &'static str,
    /// Its name in the `status` text.
    pub title: &'static str,
    pub fields: &'static [Field],
}

impl Group {
    /// The JSON pointer of `field` in the status report.
    pub fn pointer(&self, field: &str) -> String {
        format!("{}/{field}", self.at)
    }
}

/// Declares a status group: `pub struct NAME at "/pointer", "title", from |s: &Sources|
/// [let PATTERN = EXPR;]* { /// doc  field: TYPE = EXPR [=> "metric_family" "label value"], ... }`.
/// Generates the struct (serde, every field defaulted when absent), `NAME::collect(s)`, which
/// reads every field now, and `NAME::GROUP`.
macro_rules! status_group {
    (
        $(#[$sm:meta])*
        pub struct $name:ident at $at:literal, $title:literal, from |$s:ident: &$src:ty|
        $(let $p:pat = $pe:expr;)*
        {
            $(
                $(#[doc = $doc:literal])*
                $f:ident: $ty:ty = $e:expr $(=> $fam:literal $lab:literal)?
            ),* $(,)?
        }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Default)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                #[serde(default)]
                pub $f: $ty,
            )*
        }

        impl $name {
            /// Reads every field of the group now.
            #[allow(unused_variables)]
            pub fn collect($s: &$src) -> $name {
                $(let $p = $pe;)*
                $name { $($f: $e,)* }
            }

            pub const GROUP: $crate::daemon::declare::Group = $crate::daemon::declare::Group {
                at: $at,
                title: $title,
                fields: &[
                    $(
                        $crate::daemon::declare::Field {
                            name: stringify!($f),
                            doc: concat!($($doc),*),
                            metric: $crate::daemon::declare::status_group!(@metric $($fam $lab)?),
                        },
                    )*
                ],
            };
        }
    };
    (@metric) => { None };
    (@metric $fam:literal $lab:literal) => { Some(($fam, $lab)) };
}

pub(crate) use status_group;
