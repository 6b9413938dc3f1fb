//! The password policy: long enough, and not one of the passwords attackers try first.

use super::FieldError;

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 256;

/// Passwords of 12+ characters that appear near the top of public breach lists.
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678910",
    "password1234",
    "password123!",
    "passwordpassword",
    "qwertyuiop123",
    "qwertyuiopasdf",
    "iloveyou1234",
    "administrator",
    "administrator1",
    "letmein12345",
    "welcome12345",
    "welcome123456",
    "changeme1234",
    "111111111111",
    "000000000000",
    "aaaaaaaaaaaa",
    "abcdefghijkl",
    "abc123abc123",
    "trustno1trustno1",
    "football1234",
    "baseball1234",
    "sunshine1234",
    "princess1234",
    "superman1234",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "zaq12wsxcde3",
    "p@ssw0rd1234",
    "passw0rd1234",
    "mypassword123",
    "correcthorsebatterystaple",
    "monkey123456",
    "dragon123456",
    "starwars1234",
    "whatever1234",
    "computer1234",
    "internet1234",
];

/// Checks a new password; the error says what a good one looks like.
pub fn check_password_policy(field: &str, password: &str) -> Result<(), FieldError> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at least {MIN_CHARS} characters; a few unrelated words work well"),
        ));
    }
    if chars > MAX_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_CHARS} characters"),
        ));
    }
    let lowered = password.to_lowercase();
    if COMMON.contains(&lowered.as_str())
        || lowered
            .chars()
            .next()
            .is_some_and(|first| lowered.chars().all(|c| c == first))
    {
        return Err(FieldError::new(
            field,
            "is too common and would be guessed first; choose another",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforces_length_and_common_list() {
        assert!(check_password_policy("password", "short").is_err());
        assert!(check_password_policy("password", "Password1234").is_err());
        assert!(check_password_policy("password", "zzzzzzzzzzzzzz").is_err());
        assert!(check_password_policy("password", &"x".repeat(257)).is_err());
        assert!(check_password_policy("password", "plum-river-lantern-42").is_ok());
    }
}
