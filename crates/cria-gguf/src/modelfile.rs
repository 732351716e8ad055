//! An ollama `Modelfile` beside an exported GGUF: `FROM` the file, the chat format as ollama's
//! Go template for the families cria recognises (its own, ChatML, LLaMA 3), and the stop
//! strings that end a turn.

/// The Modelfile for `gguf_name` (a file name in the same directory).
pub fn modelfile(gguf_name: &str, chat_template: Option<&str>) -> String {
    let mut out = format!("# ollama create NAME -f Modelfile\nFROM ./{gguf_name}\n");
    let t = chat_template.unwrap_or("");
    let (template, stop) = if t.contains("<|end_of_turn|>") && t.contains("'<|' + message['role']")
    {
        (
            "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end_of_turn|>\n{{ end }}<|assistant|>\n",
            "<|end_of_turn|>",
        )
    } else if t.contains("<|im_start|>") {
        (
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
            "<|im_end|>",
        )
    } else if t.contains("<|start_header_id|>") {
        (
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|eot_id|>",
        )
    } else {
        out.push_str(
            "# The chat template is in the file (tokenizer.chat_template); ollama uses it when it\n# recognises it. Otherwise write a TEMPLATE here in ollama's Go template syntax.\n",
        );
        return out;
    };
    out.push_str(&format!(
        "TEMPLATE \"\"\"{template}\"\"\"\nPARAMETER stop \"{stop}\"\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cria_and_chatml_templates_get_go_templates() {
        let cria = "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end_of_turn|>\\n' }}{% endfor %}";
        let m = super::modelfile("m.gguf", Some(cria));
        assert!(m.contains("FROM ./m.gguf\n"));
        assert!(m.contains("<|{{ .Role }}|>"));
        assert!(m.contains("PARAMETER stop \"<|end_of_turn|>\""));
        let m = super::modelfile("m.gguf", Some("{{'<|im_start|>' + message['role']}}"));
        assert!(m.contains("PARAMETER stop \"<|im_end|>\""));
        let m = super::modelfile("m.gguf", None);
        assert!(!m.contains("TEMPLATE \"\"\"") && m.contains("tokenizer.chat_template"));
    }
}
