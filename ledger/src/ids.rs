//! Identifier newtypes, so that an account id can never be passed where a
//! transfer id is expected.

use std::fmt;

/// Identifies an account. Chosen by the client; `0` and `u128::MAX` are invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u128);

/// Identifies a transfer. Chosen by the client; `0` and `u128::MAX` are invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u128);

/// Identifies a ledger (one currency or asset). `0` and `u32::MAX` are invalid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerId(pub u32);

macro_rules! id_display {
    ($($id:ident),*) => {$(
        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
id_display!(AccountId, TransferId, LedgerId);

impl AccountId {
    /// Whether the id is one a client may use (neither `0` nor `u128::MAX`).
    pub const fn is_valid(self) -> bool {
        self.0 != 0 && self.0 != u128::MAX
    }
}

impl TransferId {
    /// Whether the id is one a client may use (neither `0` nor `u128::MAX`).
    pub const fn is_valid(self) -> bool {
        self.0 != 0 && self.0 != u128::MAX
    }
}
