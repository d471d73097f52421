-- A gap is filled slice by slice (by block time): each slice's trades are stored as it is
-- read, and the gap remembers how far it got, so a fill that fails part way resumes there
-- instead of starting over (or, before, discarding everything it had read).
ALTER TABLE gaps ADD COLUMN filled_to timestamptz;
