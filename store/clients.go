package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var bucketClients = []byte("clients")

// ClientRecord is a client certificate brokerd's CA issued, under its
// serial number (lower-case hex); Data belongs to package pki.
type ClientRecord struct {
	Serial string
	Data   []byte
}

// PutClient stores or replaces a client record.
func (s *Store) PutClient(rec ClientRecord) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketClients).Put([]byte(rec.Serial), rec.Data)
	})
	if err != nil {
		return fmt.Errorf("store: put client %s: %w", rec.Serial, err)
	}
	return nil
}

// Clients returns every client record, ordered by serial.
func (s *Store) Clients() ([]ClientRecord, error) {
	var out []ClientRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		if b == nil { // a state file from before clients, opened read-only
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out = append(out, ClientRecord{Serial: string(k), Data: append([]byte(nil), v...)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: clients: %w", err)
	}
	return out, nil
}
