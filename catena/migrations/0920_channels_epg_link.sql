-- A source's guide channels (GET /epg-sources/{id}/channels, the console's "EPG
-- channel" field and programme browser) page the portal's channels linked to the
-- source in epg_channel_name order.  With the link's channel name in the index that
-- is a range scan stopping at the page's end; by (portal_id, epg_source_name) alone
-- it read and sorted every linked channel (80,000 of 100,000 in the console
-- benchmark) for each page.  The new index serves the old one's lookups by source
-- name too (a rename or delete of a source, the channel's FOR SHARE), so it goes.
CREATE INDEX channels_epg_link ON channels (portal_id, epg_source_name, epg_channel_name);
DROP INDEX channels_epg_source;
