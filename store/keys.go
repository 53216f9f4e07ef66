package store

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// KeyRecord is one entry of the key registry: an id, the other names it
// answers to, and its record bytes. Ids and aliases share one namespace.
type KeyRecord struct {
	ID      string
	Aliases []string
	Data    []byte
}

// PutKey stores rec. Without replace it fails with ErrExists when the id
// exists; either way it fails with ErrExists when the id or an alias is
// taken by another key. Replacing sets the key's aliases to rec.Aliases.
func (s *Store) PutKey(rec KeyRecord, replace bool) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys, aliases := tx.Bucket(bucketKeys), tx.Bucket(bucketAliases)
		id := []byte(rec.ID)
		if keys.Get(id) != nil && !replace {
			return fmt.Errorf("key %q: %w", rec.ID, ErrExists)
		}
		if owner := aliases.Get(id); owner != nil {
			return fmt.Errorf("key %q: %w as an alias of key %q", rec.ID, ErrExists, owner)
		}
		for _, a := range rec.Aliases {
			if a == rec.ID {
				continue
			}
			if keys.Get([]byte(a)) != nil {
				return fmt.Errorf("alias %q: %w as a key id", a, ErrExists)
			}
			if owner := aliases.Get([]byte(a)); owner != nil && string(owner) != rec.ID {
				return fmt.Errorf("alias %q: %w for key %q", a, ErrExists, owner)
			}
		}
		if err := deleteAliases(aliases, rec.ID); err != nil {
			return err
		}
		for _, a := range rec.Aliases {
			if a == rec.ID {
				continue
			}
			if err := aliases.Put([]byte(a), id); err != nil {
				return err
			}
		}
		return keys.Put(id, rec.Data)
	})
	if err != nil {
		return fmt.Errorf("store: put %w", err)
	}
	return nil
}

// Key returns the key whose id or alias is name.
func (s *Store) Key(name string) (KeyRecord, error) {
	var rec KeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		keys, aliases := tx.Bucket(bucketKeys), tx.Bucket(bucketAliases)
		id := []byte(name)
		if owner := aliases.Get(id); owner != nil {
			id = owner
		}
		data := keys.Get(id)
		if data == nil {
			return fmt.Errorf("store: key %q: %w", name, ErrNotFound)
		}
		rec = KeyRecord{ID: string(id), Data: append([]byte(nil), data...), Aliases: aliasesOf(aliases, string(id))}
		return nil
	})
	return rec, err
}

// Keys returns every key, ordered by id.
func (s *Store) Keys() ([]KeyRecord, error) {
	var out []KeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		byID := map[string][]string{}
		tx.Bucket(bucketAliases).ForEach(func(a, id []byte) error {
			byID[string(id)] = append(byID[string(id)], string(a))
			return nil
		})
		return tx.Bucket(bucketKeys).ForEach(func(id, data []byte) error {
			out = append(out, KeyRecord{ID: string(id), Aliases: byID[string(id)], Data: append([]byte(nil), data...)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list keys: %w", err)
	}
	return out, nil
}

// DeleteKey removes the key with this id (not an alias) and its aliases.
func (s *Store) DeleteKey(id string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bucketKeys)
		if keys.Get([]byte(id)) == nil {
			return fmt.Errorf("key %q: %w", id, ErrNotFound)
		}
		if err := deleteAliases(tx.Bucket(bucketAliases), id); err != nil {
			return err
		}
		return keys.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("store: delete %w", err)
	}
	return nil
}

func aliasesOf(aliases *bolt.Bucket, id string) []string {
	var out []string
	aliases.ForEach(func(a, owner []byte) error {
		if string(owner) == id {
			out = append(out, string(a))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func deleteAliases(aliases *bolt.Bucket, id string) error {
	for _, a := range aliasesOf(aliases, id) {
		if err := aliases.Delete([]byte(a)); err != nil {
			return err
		}
	}
	return nil
}
