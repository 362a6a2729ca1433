//! Sums that never wrap. Every money field is bounded to ±10^12 riel when it is validated, but
//! the jobs add up whatever the lake holds: a plain `+=` on an `i64` would wrap silently in a
//! release build and print a wrong figure. Every sum of the jobs goes through [`add`] (or is
//! formed in `i128`, which the figures of a lake cannot leave, and converted back by
//! [`narrow`]): a sum that leaves the range of its type is an [`Overflow`] naming the figure
//! and the unit or scope, which the job reports before exiting non-zero, having written nothing.

use std::fmt::Display;

/// A figure whose sum leaves the range of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {figure} of {scope} does not fit in a {bits}-bit integer (the sum reaches {sum}): the \
     lake holds impossible figures; nothing was written"
)]
pub(crate) struct Overflow {
    /// The figure, e.g. `revenue_riel`.
    pub figure: &'static str,
    /// The unit, sector, province, month or level it was summed for.
    pub scope: String,
    /// Width of the type the sum must fit.
    pub bits: u32,
    /// The exact sum that did not fit.
    pub sum: i128,
}

/// An integer type the jobs sum into.
pub(crate) trait Total: Copy + Into<i128> + TryFrom<i128> {
    /// Width of the type in bits, as [`Overflow::bits`] reports it.
    const BITS: u32;
}

impl Total for i64 {
    const BITS: u32 = 64;
}
impl Total for u64 {
    const BITS: u32 = 64;
}
impl Total for u32 {
    const BITS: u32 = 32;
}

/// Converts an exact `i128` sum back to its figure's type, or names the figure that does not fit.
pub(crate) fn narrow<T: Total>(
    sum: i128,
    figure: &'static str,
    scope: &dyn Display,
) -> Result<T, Overflow> {
    T::try_from(sum).map_err(|_| Overflow {
        figure,
        scope: scope.to_string(),
        bits: T::BITS,
        sum,
    })
}

/// `*total += value`, or an [`Overflow`] naming the figure and its scope when the sum does not
/// fit `T` (`total` is then unchanged). `value` may be of a narrower type than the total.
pub(crate) fn add<T: Total, V: Into<i128>>(
    total: &mut T,
    value: V,
    figure: &'static str,
    scope: &dyn Display,
) -> Result<(), Overflow> {
    // Two values of at most 64 bits: their sum in i128 is exact.
    let sum = (*total).into() + value.into();
    *total = narrow(sum, figure, scope)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sum_beyond_i64_is_an_error_naming_the_figure_not_a_wrapped_number() {
        // 9,223,372 payments of the largest amount validation lets through (10^12 riel) add up
        // exactly; the next one would pass i64::MAX and wrap to a negative revenue with `+=` in
        // a release build: here it is an error naming the figure and the unit.
        let bound = owsu_schemas::validate::MONEY_BOUND_RIEL;
        let mut total = 0i64;
        for _ in 0..9_223_372 {
            add(&mut total, bound, "revenue_riel", &"KH-0101").unwrap();
        }
        assert_eq!(total, 9_223_372 * bound);
        let e = add(&mut total, bound, "revenue_riel", &"KH-0101").unwrap_err();
        assert_eq!(total, 9_223_372 * bound, "unchanged");
        assert_eq!(
            e,
            Overflow {
                figure: "revenue_riel",
                scope: "KH-0101".into(),
                bits: 64,
                sum: 9_223_373 * i128::from(bound),
            }
        );
        assert_eq!(
            total.wrapping_add(bound),
            -9_223_371_073_709_551_616,
            "what `+=` gives in a release build"
        );
        let text = e.to_string();
        assert!(
            text.contains("revenue_riel") && text.contains("KH-0101") && text.contains("64-bit"),
            "{text}"
        );
        // Negative sums too.
        let mut total = i64::MIN + 1;
        assert!(add(&mut total, -2i64, "refunds", &"KH-0101").is_err());
        // A count kept in u32: a negative or too large value is refused, not truncated.
        let mut count = 0u32;
        assert!(add(&mut count, -1i64, "requests received", &"KH-0101").is_err());
        assert!(add(
            &mut count,
            i64::from(u32::MAX) + 1,
            "requests received",
            &"x"
        )
        .is_err());
        add(&mut count, 7i64, "requests received", &"x").unwrap();
        assert_eq!(count, 7);
        // An i128 total of many i64 values is exact and converts back only when it fits.
        let sum: i128 = [i64::MAX, i64::MAX, -i64::MAX]
            .iter()
            .map(|v| i128::from(*v))
            .sum();
        assert_eq!(
            narrow::<i64>(sum, "revenue_riel", &"all units"),
            Ok(i64::MAX)
        );
        assert!(narrow::<i64>(sum + 1, "revenue_riel", &"all units").is_err());
    }
}
