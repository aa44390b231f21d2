//! The USB interfaces a key can be read through (CCID, OTP, FIDO) and the order to try them
//! in, as the user gives it (`--interfaces ccid,otp,fido`).

use std::fmt;
use std::str::FromStr;

/// A USB interface a key can be read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interface {
    /// The smart-card interface, read through PC/SC.
    Ccid,
    /// The OTP HID interface.
    Otp,
    /// The FIDO HID interface (CTAPHID).
    Fido,
}

impl Interface {
    /// `ccid`, `otp` or `fido`, as `--interfaces` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ccid => "ccid",
            Self::Otp => "otp",
            Self::Fido => "fido",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The interfaces to use, in the order to try them: `ccid,otp,fido` by default. An
/// interface left out is never opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceOrder(Vec<Interface>);

impl Default for InterfaceOrder {
    fn default() -> Self {
        Self(vec![Interface::Ccid, Interface::Otp, Interface::Fido])
    }
}

impl InterfaceOrder {
    /// An order from a list: at least one interface, none twice.
    pub fn new(order: Vec<Interface>) -> Result<Self, String> {
        if order.is_empty() {
            return Err("at least one interface is needed".into());
        }
        for (i, iface) in order.iter().enumerate() {
            if order[..i].contains(iface) {
                return Err(format!("{iface} is listed twice"));
            }
        }
        Ok(Self(order))
    }

    /// True when `iface` is in the order at all.
    pub fn uses(&self, iface: Interface) -> bool {
        self.0.contains(&iface)
    }

    pub(crate) fn rank(&self, iface: Interface) -> usize {
        self.0.iter().position(|i| *i == iface).unwrap_or(usize::MAX)
    }

    pub(crate) fn ccid_first(&self) -> bool {
        self.0.first() == Some(&Interface::Ccid)
    }

    /// The HID interfaces, in order.
    pub(crate) fn hid(&self) -> impl Iterator<Item = Interface> + '_ {
        self.0.iter().copied().filter(|i| *i != Interface::Ccid)
    }
}

impl FromStr for InterfaceOrder {
    type Err = String;

    /// `ccid,otp,fido` in any order and any subset.
    fn from_str(s: &str) -> Result<Self, String> {
        let order = s
            .split(',')
            .map(|part| match part.trim().to_ascii_lowercase().as_str() {
                "ccid" => Ok(Interface::Ccid),
                "otp" => Ok(Interface::Otp),
                "fido" => Ok(Interface::Fido),
                other => Err(format!("unknown interface {other:?} (expected ccid, otp or fido)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(order)
    }
}

impl fmt::Display for InterfaceOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|i| i.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_orders_parse() {
        assert_eq!("ccid,otp,fido".parse::<InterfaceOrder>().unwrap(), InterfaceOrder::default());
        assert_eq!(" FIDO , ccid".parse::<InterfaceOrder>().unwrap().to_string(), "fido,ccid");
        assert!("ccid,ccid".parse::<InterfaceOrder>().is_err());
        assert!("usb".parse::<InterfaceOrder>().is_err());
        assert!("".parse::<InterfaceOrder>().is_err());
    }
}
