//! Account and transfer flags: small bit sets with named bits.
//!
//! Flags are kept as raw bits (not an enum set) because they arrive from the
//! network: unknown bits must be representable so the state machine can
//! reject them with `reserved_flag` instead of dropping them silently.

use std::fmt;
use std::ops::BitOr;

macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$fmeta:meta])* $flag:ident = $bit:expr, $text:literal; )* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(u16);

        impl $name {
            /// No flag set.
            pub const NONE: Self = Self(0);
            $( $(#[$fmeta])* pub const $flag: Self = Self(1 << $bit); )*
            /// Every defined flag; any other bit is reserved.
            pub const ALL: Self = Self(0 $( | (1 << $bit) )*);
            const NAMES: &'static [(Self, &'static str)] = &[$( (Self::$flag, $text), )*];

            /// Flags from raw bits, keeping reserved bits so they can be rejected.
            pub const fn from_bits(bits: u16) -> Self {
                Self(bits)
            }

            /// The raw bits.
            pub const fn bits(self) -> u16 {
                self.0
            }

            /// Whether every flag of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any flag of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// `self` with the flags of `other` added.
            pub const fn with(self, other: Self) -> Self {
                Self(self.0 | other.0)
            }

            /// `self` with the flags of `other` removed.
            pub const fn without(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }

            /// Whether a bit outside [`Self::ALL`] is set.
            pub const fn has_reserved_bits(self) -> bool {
                self.0 & !Self::ALL.0 != 0
            }

            /// The flag named `name` (as printed by `Debug`), if any.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::NAMES.iter().find(|(_, text)| *text == name).map(|(flag, _)| *flag)
            }
        }

        impl BitOr for $name {
            type Output = Self;
            fn bitor(self, other: Self) -> Self {
                self.with(other)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                for (flag, text) in Self::NAMES {
                    if self.contains(*flag) {
                        if !first {
                            f.write_str("|")?;
                        }
                        f.write_str(text)?;
                        first = false;
                    }
                }
                let reserved = self.0 & !Self::ALL.0;
                if reserved != 0 {
                    if !first {
                        f.write_str("|")?;
                    }
                    write!(f, "reserved({reserved:#x})")?;
                    first = false;
                }
                if first {
                    f.write_str("none")?;
                }
                Ok(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

flag_set! {
    /// Flags of an [`Account`](crate::Account).
    AccountFlags {
        /// This account and the next event of the batch succeed or fail together.
        LINKED = 0, "linked";
        /// `debits_pending + debits_posted` may never exceed `credits_posted`
        /// (a cash or appropriation account that must not go overdrawn).
        DEBITS_MUST_NOT_EXCEED_CREDITS = 1, "debits_must_not_exceed_credits";
        /// `credits_pending + credits_posted` may never exceed `debits_posted`.
        CREDITS_MUST_NOT_EXCEED_DEBITS = 2, "credits_must_not_exceed_debits";
        /// Keep the balance after every change, so balances can be read as of
        /// any timestamp.
        HISTORY = 3, "history";
        /// No transfer may debit or credit this account (set at creation or by
        /// a closing transfer; cleared when that closing transfer is voided or
        /// expires).
        CLOSED = 4, "closed";
    }
}

flag_set! {
    /// Flags of a [`Transfer`](crate::Transfer).
    TransferFlags {
        /// This transfer and the next event of the batch succeed or fail together.
        LINKED = 0, "linked";
        /// Reserve the amount (a commitment / encumbrance) instead of moving it.
        PENDING = 1, "pending";
        /// Post all or part of the pending transfer named by `pending_id`.
        POST_PENDING = 2, "post_pending";
        /// Void the pending transfer named by `pending_id`, releasing its amount.
        VOID_PENDING = 3, "void_pending";
        /// Move at most `amount`: as much as keeps the debit account's debits
        /// within its credits.
        BALANCING_DEBIT = 4, "balancing_debit";
        /// Move at most `amount`: as much as keeps the credit account's
        /// credits within its debits.
        BALANCING_CREDIT = 5, "balancing_credit";
        /// Close the debit account (only with `pending`; voiding or expiry reopens it).
        CLOSING_DEBIT = 6, "closing_debit";
        /// Close the credit account (only with `pending`; voiding or expiry reopens it).
        CLOSING_CREDIT = 7, "closing_credit";
        /// A closing adjustment of its fiscal year: the only transfers a
        /// ledger in its `adjustment` period accepts.
        ADJUSTMENT = 8, "adjustment";
    }
}

impl TransferFlags {
    /// Whether this event posts or voids an earlier pending transfer.
    pub const fn is_post_or_void(self) -> bool {
        self.intersects(Self::POST_PENDING.with(Self::VOID_PENDING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_every_set_flag_and_reserved_bits() {
        let flags = TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT;
        assert_eq!(format!("{flags:?}"), "pending|closing_debit");
        assert_eq!(format!("{:?}", TransferFlags::from_bits(1 << 12)), "reserved(0x1000)");
        assert_eq!(format!("{:?}", AccountFlags::NONE), "none");
    }

    #[test]
    fn reserved_bits_are_detected() {
        assert!(!TransferFlags::ALL.has_reserved_bits());
        assert!(TransferFlags::from_bits(1 << 9).has_reserved_bits());
        assert!(AccountFlags::from_bits(1 << 5).has_reserved_bits());
    }

    #[test]
    fn flags_are_found_by_name() {
        assert_eq!(TransferFlags::from_name("void_pending"), Some(TransferFlags::VOID_PENDING));
        assert_eq!(AccountFlags::from_name("history"), Some(AccountFlags::HISTORY));
        assert_eq!(AccountFlags::from_name("nope"), None);
    }
}
