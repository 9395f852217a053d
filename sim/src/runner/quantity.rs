//! Kubernetes resource quantities (`32Mi`, `1.5G`, `500m`, `2`, `1e3`) as the engine needs them.

/// A quantity the runner cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct BadQuantity(pub String);

fn value(q: &str) -> Result<f64, BadQuantity> {
    let bad = || BadQuantity(q.to_string());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(v)
}

/// A memory quantity in bytes (rounded up, as Kubernetes does for byte quantities).
pub fn memory_bytes(q: &str) -> Result<u64, BadQuantity> {
    Ok(value(q)?.ceil() as u64)
}

/// A CPU quantity in millicores (rounded up; Kubernetes' smallest CPU unit is 1m).
pub fn cpu_millis(q: &str) -> Result<u64, BadQuantity> {
    Ok((value(q)? * 1000.0 - 1e-9).ceil().max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(memory_bytes("32Mi").unwrap(), 32 * 1024 * 1024);
        assert_eq!(memory_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("1.5Gi").unwrap(), 1_610_612_736);
        assert_eq!(memory_bytes("128974848").unwrap(), 128_974_848);
        assert_eq!(memory_bytes("129e6").unwrap(), 129_000_000);
        assert_eq!(memory_bytes("64k").unwrap(), 64_000);
        assert!(memory_bytes("12MB").is_err());
        assert!(memory_bytes("").is_err());
        assert!(memory_bytes("-1Mi").is_err());
    }

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("500m").unwrap(), 500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.25").unwrap(), 250);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert!(cpu_millis("one").is_err());
    }
}
