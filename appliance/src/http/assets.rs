//! The browser viewer, embedded at build time from `web-assets/`.

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// An embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Looks up the asset for a URL path; `/` is `/index.html`.
pub fn find(path: &str) -> Option<Asset> {
    let path = match path {
        "/" => "/index.html",
        // Browsers ask for it whatever the page says.
        "/favicon.ico" => "/favicon.svg",
        other => other,
    };
    ASSETS.iter().find(|(p, _, _)| *p == path).map(|(_, content_type, bytes)| Asset { content_type, bytes })
}

#[cfg(test)]
mod tests {
    #[test]
    fn index_is_embedded_and_root_maps_to_it() {
        let index = super::find("/").expect("web-assets/index.html is embedded");
        assert!(index.content_type.starts_with("text/html"));
        assert!(!index.bytes.is_empty());
        assert!(super::find("/no-such-file").is_none());
    }
}
