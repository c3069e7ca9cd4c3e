//! The console's files, compiled into the binary: each with the path it is
//! served at and its content type. A module script imports its siblings by
//! relative path (`./api.js`), so every file lives under `/console/`; the
//! page itself is `/console`. The tests below check that every path the
//! page and the scripts refer to is here, so a file added to `static/` but
//! not to the table (or renamed in one place only) fails a test, not a
//! browser.

/// One served file.
pub(crate) struct Asset {
    /// The route it answers at.
    pub(crate) path: &'static str,
    /// Its `Content-Type`.
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:expr) => {
        Asset { path: $path, content_type: $content_type, body: include_str!(concat!("static/", $file)) }
    };
}

/// Every file of the console.
pub(crate) const ASSETS: [Asset; 12] = [
    asset!("/console", "index.html", HTML),
    asset!("/console/style.css", "style.css", CSS),
    // Without an icon of its own a browser asks for /favicon.ico, and logs the 404.
    asset!("/console/favicon.svg", "favicon.svg", SVG),
    asset!("/console/app.js", "app.js", JS),
    asset!("/console/api.js", "api.js", JS),
    asset!("/console/dom.js", "dom.js", JS),
    asset!("/console/search.js", "search.js", JS),
    asset!("/console/catalog.js", "catalog.js", JS),
    asset!("/console/item.js", "item.js", JS),
    asset!("/console/model.js", "model.js", JS),
    asset!("/console/variants.js", "variants.js", JS),
    asset!("/console/admin.js", "admin.js", JS),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn served(path: &str) -> bool {
        ASSETS.iter().any(|asset| asset.path == path)
    }

    /// The values of `attribute="..."` in `html`.
    fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
        let marker = format!("{attribute}=\"");
        html.match_indices(&marker)
            .filter_map(|(at, _)| {
                let rest = &html[at + marker.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect()
    }

    #[test]
    fn the_page_refers_only_to_served_assets() {
        let page = ASSETS[0].body;
        let refs: Vec<&str> = attribute_values(page, "src").into_iter().chain(attribute_values(page, "href")).collect();
        assert!(refs.contains(&"/console/app.js") && refs.contains(&"/console/style.css"), "{refs:?}");
        for path in refs {
            assert!(served(path), "index.html refers to {path}, which is not served");
        }
    }

    #[test]
    fn every_import_is_a_served_module_and_every_module_is_imported() {
        let mut imported = vec!["/console/app.js".to_string()];
        for asset in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            for line in asset.body.lines().filter(|line| line.starts_with("import ")) {
                let from = line.split(" from ").nth(1).expect("an import names its module");
                let name = from.trim_end_matches(';').trim_matches('\'');
                let path = format!("/console/{}", name.strip_prefix("./").expect("a sibling module"));
                assert!(served(&path), "{} imports {path}, which is not served", asset.path);
                imported.push(path);
            }
        }
        for asset in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            assert!(imported.iter().any(|path| path == asset.path), "{} is served but never loaded", asset.path);
        }
    }

    #[test]
    fn no_script_writes_markup() {
        for asset in ASSETS.iter().filter(|asset| asset.content_type == JS) {
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "localStorage",
                "sessionStorage",
                "document.cookie",
                "eval(",
            ] {
                assert!(!asset.body.contains(forbidden), "{} uses {forbidden}", asset.path);
            }
        }
    }
}
