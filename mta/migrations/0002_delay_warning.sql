-- Delay warnings (delay_warning_time): set once the one warning for a message is queued, in
-- the same transaction as the warning, so a restart neither repeats nor loses it.
ALTER TABLE messages ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
