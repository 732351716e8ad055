//! The HTTP API as a real third-party OpenAI client (async-openai) sees it: response shapes it
//! parses, streaming, several choices, seeds, stop strings, log-probabilities, tool calls and
//! completions with echo. (Errors, limits and concurrency: api_limits.rs.)
//!
//! Models (scripts/ref/serve_fixtures.py): `chat`, a random LLaMA with Qwen2.5's template;
//! `tool_caller`, whose greedy reply is a Hermes tool call.

mod common;
use async_openai::types::chat::{ChatCompletionMessageToolCalls, FinishReason};
use async_openai::types::completions::CreateCompletionRequest;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_reads_models_and_chat_completions() {
    let s = Server::default().await;
    let models = s.client().models().list().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["chat", "tool_caller"]);
    assert_eq!(
        s.client().models().retrieve("chat").await.unwrap().id,
        "chat"
    );

    let ask = json!({"model": "chat", "messages": user("Where is my order?"), "max_tokens": 12,
                     "n": 3, "seed": 7, "temperature": 1.0, "logprobs": true, "top_logprobs": 3});
    let r = chat(&s, ask.clone()).await;
    assert_eq!(r.object, "chat.completion");
    assert_eq!(r.choices.len(), 3);
    let usage = r.usage.clone().unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(usage.completion_tokens, 36, "three choices of 12 tokens");
    for (i, c) in r.choices.iter().enumerate() {
        assert_eq!(c.index as usize, i);
        assert_eq!(c.finish_reason, Some(FinishReason::Length));
        let lp = c.logprobs.as_ref().unwrap().content.as_ref().unwrap();
        assert_eq!(lp.len(), 12);
        // The tokens' bytes spell the reply.
        let bytes: Vec<u8> = lp.iter().flat_map(|t| t.bytes.clone().unwrap()).collect();
        let spelled = String::from_utf8_lossy(&bytes);
        assert_eq!(
            spelled.trim_end_matches('\u{FFFD}'),
            content(&r, i).trim_end_matches('\u{FFFD}')
        );
        for t in lp {
            assert_eq!(t.top_logprobs.len(), 3);
            assert!(t.logprob <= 0.0 && t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob);
        }
    }
    // Choices sample with seeds of their own; the same seed gives the same replies.
    assert_ne!(content(&r, 0), content(&r, 1));
    let again = chat(&s, ask).await;
    for i in 0..3 {
        assert_eq!(content(&r, i), content(&again, i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_says_what_the_whole_response_says() {
    let s = Server::default().await;
    let ask = json!({"messages": [{"role": "system", "content": "You answer briefly."},
                                  {"role": "user", "content": [{"type": "text", "text": "Returns?"}]}],
                     "model": "chat", "max_tokens": 20, "temperature": 0});
    let whole = chat(&s, ask.clone()).await;
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let mut stream = s
        .client()
        .chat()
        .create_stream(chat_request(streamed))
        .await
        .unwrap();
    let (mut text, mut roles, mut finish, mut usage) = (String::new(), 0, None, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.object, "chat.completion.chunk");
        if let Some(u) = chunk.usage {
            assert!(chunk.choices.is_empty(), "the usage chunk has no choices");
            usage = Some(u);
        }
        for c in chunk.choices {
            roles += c.delta.role.is_some() as usize;
            text.push_str(&c.delta.content.unwrap_or_default());
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(roles, 1, "the first delta carries the role");
    assert_eq!(text, content(&whole, 0));
    assert_eq!(finish, Some(FinishReason::Length));
    assert_eq!(usage.unwrap().completion_tokens, 20);
    // The raw stream ends with [DONE].
    let raw = s
        .stream(json!({"model": "chat", "messages": user("hi"), "max_tokens": 3, "stream": true}))
        .await;
    assert_eq!(raw.last().unwrap(), "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_split_across_tokens_ends_the_reply_and_is_not_returned() {
    let s = Server::default().await;
    let ask = |stop: Value, stream: bool| {
        json!({"model": "chat", "messages": user("Where is my order?"), "max_tokens": 40,
               "temperature": 0, "stop": stop, "stream": stream})
    };
    let full = content(&chat(&s, ask(Value::Null, false)).await, 0);
    // Up to six characters of the reply's longest stretch of whole characters: with 320
    // tokens they span several.
    let stretch: Vec<char> = full
        .split('\u{FFFD}')
        .max_by_key(|p| p.chars().count())
        .unwrap()
        .chars()
        .collect();
    assert!(stretch.len() >= 4, "a long enough reply: {full:?}");
    let from = (stretch.len() - 4).min(2);
    let stop: String = stretch[from..(from + 6).min(stretch.len())]
        .iter()
        .collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let r = chat(&s, ask(json!([stop.clone(), "no such text"]), false)).await;
    assert_eq!(content(&r, 0), cut);
    assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    let events = s.stream(ask(json!(stop), true)).await;
    let streamed = deltas(&events);
    assert_eq!(streamed, cut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_parsed_streamed_and_accepted_back() {
    let s = Server::default().await;
    let expected = cria_testkit::read_json(&fixture("tool_caller/expected.json"));
    // The prompt is the one transformers' apply_chat_template renders.
    let m = s.app.model(Some("tool_caller")).unwrap();
    let messages: Vec<Value> = expected["messages"].as_array().unwrap().clone();
    let tools: Vec<Value> = expected["tools"].as_array().unwrap().clone();
    let ids = m.chat_prompt(&messages, Some(tools.clone())).unwrap();
    assert_eq!(
        ids,
        cria_testkit::usizes(&expected["prompt_ids"])
            .iter()
            .map(|&i| i as u32)
            .collect::<Vec<_>>()
    );

    let ask =
        json!({"model": "tool_caller", "messages": messages, "tools": tools, "temperature": 0});
    let r = chat(&s, ask.clone()).await;
    let c = &r.choices[0];
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.message.content, None);
    let calls = c.message.tool_calls.as_ref().unwrap();
    let ChatCompletionMessageToolCalls::Function(call) = &calls[0] else {
        panic!("a function call: {calls:?}");
    };
    assert_eq!(call.function.name, "lookup_order");
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(args, json!({"order": "A-1001"}));

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let mut stream = s
        .client()
        .chat()
        .create_stream(chat_request(streamed))
        .await
        .unwrap();
    let (mut name, mut arguments, mut finish, mut text) =
        (String::new(), String::new(), None, String::new());
    while let Some(chunk) = stream.next().await {
        for c in chunk.unwrap().choices {
            text.push_str(&c.delta.content.unwrap_or_default());
            for t in c.delta.tool_calls.unwrap_or_default() {
                let f = t.function.unwrap();
                name.push_str(&f.name.unwrap_or_default());
                arguments.push_str(&f.arguments.unwrap_or_default());
            }
            finish = finish.or(c.finish_reason);
        }
    }
    assert_eq!(
        (name.as_str(), finish),
        ("lookup_order", Some(FinishReason::ToolCalls))
    );
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
    assert_eq!(text, "", "the call is not also sent as content");

    // The call and its result go back into the conversation.
    let mut turn = ask;
    let history = turn["messages"].as_array_mut().unwrap();
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "lookup_order", "arguments": call.function.arguments}}]}));
    history.push(
        json!({"role": "tool", "tool_call_id": call.id, "content": "{\"status\": \"shipped\"}"}),
    );
    turn["max_tokens"] = json!(4);
    let r = chat(&s, turn).await;
    assert!(r.usage.unwrap().prompt_tokens > ids.len() as u32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_echo_the_prompt_with_its_log_probabilities() {
    let s = Server::default().await;
    let req: CreateCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "prompt": "Orders ship within", "max_tokens": 4, "temperature": 0,
        "echo": true, "logprobs": 2}))
    .unwrap();
    let r = s.client().completions().create(req).await.unwrap();
    let c = &r.choices[0];
    assert!(c.text.starts_with("Orders ship within"), "{:?}", c.text);
    let lp = c.logprobs.as_ref().unwrap();
    let usage = r.usage.unwrap();
    assert_eq!(
        lp.tokens.len() as u32,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(
        lp.token_logprobs[0], None,
        "the first token has nothing before it"
    );
    assert!(
        lp.token_logprobs[1..]
            .iter()
            .all(|l| l.is_some_and(|l| l <= 0.0))
    );
    assert_eq!(lp.text_offset[0], 0);
    // Two prompts, two choices each: four choices in order.
    let req: CreateCompletionRequest = serde_json::from_value(json!({
        "model": "chat", "prompt": ["Orders ship", "Returns are"], "max_tokens": 3, "n": 2,
        "temperature": 0}))
    .unwrap();
    let r = s.client().completions().create(req).await.unwrap();
    let idx: Vec<u32> = r.choices.iter().map(|c| c.index).collect();
    assert_eq!(idx, [0, 1, 2, 3]);
    assert_eq!(r.choices[0].text, r.choices[1].text, "greedy choices agree");
    // Token ids work as a prompt too.
    let (status, body) = s
        .post(
            "/v1/completions",
            json!({"model": "chat", "prompt": [5, 6, 7], "max_tokens": 2}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
}
