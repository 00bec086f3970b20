"""Model provisioning: allowed models offline, the Hugging Face cache, packaged real weights and tiny / full-size
random builds."""
