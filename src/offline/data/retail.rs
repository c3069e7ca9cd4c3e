//! Importer for the UCI Online Retail CSV, applying EVAL_PROTOCOL v1 §1's
//! cleaning. Skipped rows are counted by reason.

use std::path::Path;

use serde::Deserialize;

use super::{header_name, missing_column, open_maybe_gz, parse_time, DataError, Dataset, Event};

/// Stock codes that are postage, fees or manual adjustments, not products.
pub(crate) const NON_PRODUCT_CODES: [&str; 12] =
    ["POST", "D", "DOT", "M", "m", "BANK CHARGES", "C2", "CRUK", "PADS", "AMAZONFEE", "S", "B"];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    invoice_no: String,
    stock_code: String,
    description: Option<String>,
    quantity: String,
    invoice_date: String,
    unit_price: String,
    #[serde(rename = "CustomerID")]
    customer_id: Option<String>,
}

/// The columns the importer reads (`Country` is not needed).
const COLUMNS: [&str; 7] =
    ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"];

pub(crate) fn load(path: &Path) -> Result<Dataset, DataError> {
    let mut reader = csv::ReaderBuilder::new().from_reader(open_maybe_gz(path)?);
    let malformed = |line, problem| DataError::Malformed { path: path.into(), line, problem };
    let header: csv::StringRecord =
        reader.headers().map_err(|e| malformed(1, e.to_string()))?.iter().map(header_name).collect();
    if let Some(missing) = COLUMNS.iter().find(|c| !header.iter().any(|h| h == **c)) {
        let hint = if header.iter().any(|h| h.eq_ignore_ascii_case("user_id")) {
            "; this looks like the generic format: give it with --events FILE --items FILE"
        } else {
            ""
        };
        return Err(missing_column(path, &header, missing, &COLUMNS, hint));
    }
    reader.set_headers(header);
    let mut data = Dataset::default();
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        let line = index + 2; // 1-based, after the header
        data.report.rows += 1;
        let row = match row {
            Ok(row) => row,
            Err(e) if e.is_io_error() => return Err(malformed(line, e.to_string())),
            Err(e) => {
                data.report.skip(path, line, "unparsable row", &e.to_string());
                continue;
            }
        };
        match clean(&row) {
            Ok((quantity, price, time, customer, description)) => {
                let event = Event {
                    user: data.users.intern(customer),
                    item: data.items.intern(row.stock_code.trim()),
                    time,
                    quantity,
                    price: Some(price),
                    text: Some(data.descriptions.intern(description)),
                };
                data.events.push(event);
                data.report.kept += 1;
            }
            Err(reason) => data.report.skip(path, line, reason, ""),
        }
    }
    if data.events.is_empty() {
        return Err(data.report.nothing_usable(path));
    }
    Ok(data.finish())
}

type Clean<'a> = (f32, f32, i64, &'a str, &'a str);

/// EVAL_PROTOCOL v1 §1, rule by rule; the error names the rule that failed.
fn clean(row: &Row) -> Result<Clean<'_>, &'static str> {
    if row.invoice_no.starts_with('C') {
        return Err("cancellation");
    }
    let customer = row.customer_id.as_deref().map(str::trim).filter(|c| !c.is_empty()).ok_or("no customer")?;
    // Some exports write the id as a float ("17850.0").
    let customer = customer.strip_suffix(".0").unwrap_or(customer);
    let quantity: f32 = row.quantity.trim().parse().map_err(|_| "bad quantity")?;
    let price: f32 = row.unit_price.trim().parse().map_err(|_| "bad price")?;
    // NaN fails too: "NaN" parses as a number.
    if quantity.is_nan() || quantity <= 0.0 {
        return Err("quantity <= 0");
    }
    if !price.is_finite() || price <= 0.0 {
        return Err("price <= 0");
    }
    let description = row.description.as_deref().map(str::trim).filter(|d| !d.is_empty()).ok_or("no description")?;
    if NON_PRODUCT_CODES.contains(&row.stock_code.trim()) {
        return Err("non-product stock code");
    }
    let time = parse_time(&row.invoice_date).ok_or("bad date")?;
    Ok((quantity, price, time, customer, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    fn load_text(body: &str) -> Result<Dataset, DataError> {
        let dir = std::env::temp_dir().join(format!("shoprank-retail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.csv", body.len()));
        std::fs::write(&path, format!("{HEADER}{body}")).unwrap();
        load(&path)
    }

    #[test]
    fn cleaning_applies_every_protocol_rule() {
        let data = load_text(concat!(
            "1,A1,GOOD ROW,2,2011-01-01 10:00:00,1.5,100,UK\n",
            "C2,A1,CANCELLED,2,2011-01-01 10:00:00,1.5,100,UK\n",
            "3,A1,GUEST,2,2011-01-01 10:00:00,1.5,,UK\n",
            "4,A1,NEG QTY,-2,2011-01-01 10:00:00,1.5,100,UK\n",
            "5,A1,FREE,2,2011-01-01 10:00:00,0,100,UK\n",
            "6,A1,  ,2,2011-01-01 10:00:00,1.5,100,UK\n",
            "7,POST,POSTAGE,1,2011-01-01 10:00:00,18,100,UK\n",
            "8,B2,  SECOND GOOD  ,1,2011-01-02 10:00:00,2,101.0,UK\n",
        ))
        .unwrap();
        assert_eq!(data.report.rows, 8);
        assert_eq!(data.report.kept, 2);
        for reason in
            ["cancellation", "no customer", "quantity <= 0", "price <= 0", "no description", "non-product stock code"]
        {
            assert_eq!(data.report.skipped.get(reason), Some(&1), "{reason}");
        }
        assert_eq!(data.users.name(data.events[1].user), "101");
        assert_eq!(data.descriptions.name(data.events[1].text.unwrap()), "SECOND GOOD");
    }

    #[test]
    fn a_header_without_a_column_names_it_and_suggests_the_generic_format() {
        let dir = std::env::temp_dir().join(format!("shoprank-retail-header-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.csv");
        std::fs::write(&path, "user_id,item_id,timestamp\nu1,A,2024-01-01\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("`InvoiceNo`") && err.contains("--events"), "{err}");
        std::fs::write(&path, format!("\u{feff}{HEADER}1,A1,GOOD ROW,2,2011-01-01 10:00:00,1.5,100,UK\n")).unwrap();
        assert_eq!(load(&path).unwrap().events.len(), 1, "a byte order mark is read past");
    }

    #[test]
    fn a_file_with_no_usable_rows_is_an_error() {
        let err = load_text("C2,A1,X,2,2011-01-01 10:00:00,1.5,100,UK\n").unwrap_err().to_string();
        assert!(err.contains("no usable rows") && err.contains("cancellation"), "{err}");
    }
}
