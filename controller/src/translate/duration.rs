//! Durations as Istio (`1.5s`, `100ms`) and Gateway API (`1h30m`, `500ms`) write them.

/// Milliseconds in `text`: one or more `<number><unit>` with units h, m, s, ms, us, ns.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid duration {text:?} (examples: 1.5s, 250ms, 1m30s)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let millis_per_unit = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return Err(invalid()),
        };
        total += number * millis_per_unit;
        rest = &rest[unit_len..];
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn parses_istio_and_gateway_api_forms() {
        assert_eq!(parse_ms("1.5s"), Ok(1500));
        assert_eq!(parse_ms("250ms"), Ok(250));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_ms("1h"), Ok(3_600_000));
        assert!(parse_ms("10").is_err());
        assert!(parse_ms("fast").is_err());
        assert!(parse_ms("").is_err());
    }
}
