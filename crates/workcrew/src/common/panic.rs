//! The text of a caught panic.

use std::any::Any;

/// The panic message, when the payload is a string (as `panic!("...")` and
/// `panic!("{x}")` make it); `None` for any other payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn string_payloads_give_their_text_and_others_none() {
        let literal = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*literal), Some("plain"));
        let formatted = std::panic::catch_unwind(|| panic!("item {}", 7)).unwrap_err();
        assert_eq!(panic_message(&*formatted), Some("item 7"));
        let other = std::panic::catch_unwind(|| std::panic::panic_any(42_u8)).unwrap_err();
        assert_eq!(panic_message(&*other), None);
    }
}
